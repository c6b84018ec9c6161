"""What a step will cost, learnt from what steps cost: the scheduler's clock.

Two linear models, refitted from the last measurements:

- a decode pass: ``d0 + d1 * rows + d2 * context`` (context: the rows' tokens
  summed; attention reads all of them);
- the prefill of one step: ``p0 + p1 * tokens + p2 * tokens x context + p3 * context``
  (per chunk, its new tokens, how far into its prompt they are, and the cached
  context the chunk reads).

On MLX's CPU backend a 16-token chunk at 6,000 tokens of context costs as much as
a 500-token one at the start of a prompt, so a fixed token budget cannot bound a
step's time; this model can. Fits are least squares pulled towards the priors
(ridge), so a handful of similar steps cannot produce a wild extrapolation, and
the priors (measured on a 2-core x86 CPU with a 135M model) only matter until the
first steps have run. Pure Python: no MLX, testable without a model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

_WINDOW = 64  # measurements kept per model
_RIDGE = 0.5  # weight of the prior, in units of one typical measurement


@dataclass(frozen=True)
class ChunkShape:
    """One prefill chunk: ``tokens`` new tokens after ``start`` cached ones."""

    start: int
    tokens: int


def _prefill_features(chunks: Sequence[ChunkShape]) -> list[float]:
    live = [c for c in chunks if c.tokens > 0]
    return [
        1.0 if live else 0.0,
        float(sum(c.tokens for c in live)),
        float(sum(c.tokens * (c.start + c.tokens / 2) for c in live)),
        float(sum(c.start for c in live)),
    ]


def _decode_features(rows: int, context: int) -> list[float]:
    return [1.0 if rows else 0.0, float(rows), float(context)]


class _LinearFit:
    """y ~ w . x over a window of measurements, ridge-regularised towards ``prior``."""

    def __init__(self, prior: Sequence[float], scale: Sequence[float]) -> None:
        self.prior = list(prior)
        self._scale = list(scale)  # a typical feature vector, to size the ridge
        self.weights = list(prior)
        self._samples: deque[tuple[list[float], float]] = deque(maxlen=_WINDOW)

    def predict(self, x: Sequence[float]) -> float:
        return max(0.0, sum(w * v for w, v in zip(self.weights, x, strict=True)))

    def add(self, x: list[float], y: float) -> None:
        self._samples.append((x, y))
        self.weights = self._solve()

    def _solve(self) -> list[float]:
        n = len(self.prior)
        # Normal equations of |Xw - y|^2 + sum_i (r_i (w_i - prior_i))^2, with
        # r_i = _RIDGE * scale_i: a prior counts like a fraction of one measurement.
        a = [[0.0] * n for _ in range(n)]
        b = [0.0] * n
        for x, y in self._samples:
            for i in range(n):
                b[i] += x[i] * y
                for j in range(n):
                    a[i][j] += x[i] * x[j]
        for i in range(n):
            r = (_RIDGE * self._scale[i]) ** 2
            a[i][i] += r
            b[i] += r * self.prior[i]
        solved = _gauss(a, b)
        if solved is None:
            return self.weights
        return [max(0.0, w) for w in solved]  # no term makes work cheaper


def _gauss(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Solve a x = b (small, dense) by Gaussian elimination with partial pivoting."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-30:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


class StepCostModel:
    """Seconds a decode pass and a step's prefill take, learnt online."""

    def __init__(self) -> None:
        # Priors in seconds: a 135M model in float32 on 2 x86 cores. Scales: a
        # 16-row decode at 300 tokens each; a 512-token chunk 1,000 tokens in.
        self._decode = _LinearFit((0.03, 0.004, 2e-6), (1.0, 16.0, 4800.0))
        self._prefill = _LinearFit((0.03, 0.0025, 3e-6, 5e-6), (1.0, 512.0, 6.4e5, 1000.0))

    def decode_s(self, rows: int, context: int) -> float:
        return self._decode.predict(_decode_features(rows, context)) if rows else 0.0

    def prefill_s(self, chunks: Sequence[ChunkShape]) -> float:
        return self._prefill.predict(_prefill_features(chunks))

    def observe_decode(self, rows: int, context: int, seconds: float) -> None:
        if rows and seconds > 0:
            self._decode.add(_decode_features(rows, context), seconds)

    def observe_prefill(self, chunks: Sequence[ChunkShape], seconds: float) -> None:
        if any(c.tokens for c in chunks) and seconds > 0:
            self._prefill.add(_prefill_features(chunks), seconds)

    def max_tokens(
        self, planned: Sequence[ChunkShape], start: int, wanted: int, seconds: float
    ) -> int:
        """The most of ``wanted`` tokens after ``start`` whose chunk keeps the step's
        prefill (with ``planned``) within ``seconds``; 0 if not even one fits."""
        if self.prefill_s([*planned, ChunkShape(start, 1)]) > seconds:
            return 0
        lo, hi = 1, wanted  # cost grows with the tokens: bisect
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.prefill_s([*planned, ChunkShape(start, mid)]) <= seconds:
                lo = mid
            else:
                hi = mid - 1
        return lo
