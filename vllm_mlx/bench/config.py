"""Frozen settings of one `vllm-mlx bench` invocation."""

from __future__ import annotations

from dataclasses import dataclass

from vllm_mlx.config import DType

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
SERVER_LABEL = "server"
BASELINE_LABEL = "mlx-lm direct"


@dataclass(frozen=True)
class BenchConfig:
    base_url: str = DEFAULT_BASE_URL  # OpenAI-compatible root, e.g. http://host:8000/v1
    model: str = "default"  # "model" field sent with every request
    api_key: str | None = None  # sent as "Authorization: Bearer <key>" when set
    timeout: float = 300.0  # wall-clock limit of one request, seconds
    concurrency: tuple[int, ...] = (1, 2, 4, 8)  # sweep levels, run in this order
    num_prompts: int | None = None  # requests per level; None = max(4, 2 * level)
    prompt_tokens: int = 128  # approximate prompt length (synthetic words)
    max_tokens: int = 64  # output length, fixed via ignore_eos
    temperature: float = 0.0  # sampling temperature sent to the server / baseline
    warmup: int = 0  # unmeasured requests sent before the sweep
    seed: int = 0  # seed of the synthetic prompts
    json_path: str | None = None  # append one JSON object per level here; "-" = stdout
    baseline: bool = False  # run mlx-lm in-process instead of contacting a server
    compare_baseline: bool = False  # level 1 alternates baseline and server requests; a ratio
    baseline_model: str | None = None  # model spec for the baseline; None = embedded default
    dtype: DType = DType.AUTO  # weight dtype policy of the baseline model
    progress: bool = True  # show a tqdm bar per level on stderr
    shared_prefix_tokens: int = 0  # common system message per level, ~tokens; 0 = none
    multi_turn: int = 1  # turns per simulated user; turn k+1 resends the whole history
    status_interval: float = 0.5  # seconds between GET /v1/status polls during a level
    ttft_probe: bool = False  # cold / warm / prefix-hit TTFT of one long prompt, no sweep
    blocks_probe: int = 0  # K > 0: KV blocks held by K concurrent shared-prefix requests
    interference_probe: int = 0  # K > 0: K short chats against one long prompt (issue 16)
    long_prompt_tokens: int = 6000  # ~tokens of the interference probe's long prompt
    interference_delay: float = 2.0  # seconds between the long prompt and the chats after it
    banned_tokens: tuple[int, ...] = ()  # sent with logit_bias -100 (peers lack ignore_eos)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url must start with http:// or https://: {self.base_url!r}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError("concurrency levels must be integers >= 1")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError("--num-prompts must be >= 1")
        if self.prompt_tokens < 1 or self.max_tokens < 1:
            raise ValueError("--prompt-tokens and --max-tokens must be >= 1")
        if self.warmup < 0:
            raise ValueError("--warmup must be >= 0")
        if not self.timeout > 0:  # (nan too)
            raise ValueError("--timeout must be > 0")
        if not self.temperature >= 0:
            raise ValueError("--temperature must be >= 0")
        self._check_cache_options()

    def _check_cache_options(self) -> None:
        """Validate the prefix-cache workload and probe options."""
        if self.shared_prefix_tokens < 0:
            raise ValueError("--shared-prefix-tokens must be >= 0")
        if self.multi_turn < 1:
            raise ValueError("--multi-turn must be >= 1")
        if not self.status_interval > 0:
            raise ValueError("--status-interval must be > 0")
        if self.blocks_probe < 0:
            raise ValueError("--blocks-probe must be >= 0")
        if self.interference_probe < 0:
            raise ValueError("--interference-probe must be >= 0")
        if self.long_prompt_tokens < 1:
            raise ValueError("--long-prompt-tokens must be >= 1")
        if not self.interference_delay >= 0:
            raise ValueError("--interference-delay must be >= 0")
        chosen = [
            name
            for name, on in (
                ("--ttft-probe", self.ttft_probe),
                ("--blocks-probe", self.blocks_probe),
                ("--interference-probe", self.interference_probe),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(f"{' and '.join(chosen)} are separate runs: pick one")
        if self.blocks_probe and self.shared_prefix_tokens < 1:
            raise ValueError("--blocks-probe needs --shared-prefix-tokens >= 1")
        if self.runs_baseline and (self.probe or self.shared_prefix_tokens or self.multi_turn > 1):
            raise ValueError(
                "--baseline and --compare-baseline measure plain single-turn prompts; "
                "drop --shared-prefix-tokens, --multi-turn and the probes"
            )

    @property
    def probe(self) -> str | None:
        """The probe run instead of the sweep: "ttft", "blocks", "interference" or None."""
        if self.ttft_probe:
            return "ttft"
        if self.blocks_probe:
            return "blocks"
        return "interference" if self.interference_probe else None

    @property
    def runs_baseline(self) -> bool:
        """Whether this invocation runs mlx-lm in-process."""
        return self.baseline or self.compare_baseline

    @property
    def sweep(self) -> tuple[int, ...]:
        """Server concurrency levels; a comparison always needs level 1, so it is added."""
        if self.compare_baseline and 1 not in self.concurrency:
            return (1, *self.concurrency)
        return self.concurrency

    def prompts_for(self, level: int) -> int:
        """Number of measured requests at one concurrency level."""
        return self.num_prompts if self.num_prompts is not None else max(4, 2 * level)


def parse_concurrency(text: str) -> tuple[int, ...]:
    """Parse "1,2,4,8" into (1, 2, 4, 8), dropping duplicates but keeping order."""
    levels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            level = int(part)
        except ValueError:
            raise ValueError(f"not an integer concurrency level: {part!r}") from None
        if level < 1:
            raise ValueError(f"concurrency levels must be >= 1, got {level}")
        if level not in levels:
            levels.append(level)
    if not levels:
        raise ValueError("no concurrency levels given")
    return tuple(levels)
