"""What the server holds for /v1/embeddings: the worker and the names it answers to.

Without ``--embedding-model`` the embedded default loads on first use, so a chat-only
server pays nothing for it; a pinned ``--embedding-model`` loads at start, so a bad
spec fails the start as a bad chat model does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vllm_mlx.config import DType, EmbeddingConfig
from vllm_mlx.embeddings.batcher import BatchLimits
from vllm_mlx.embeddings.loader import (
    DEFAULT_MODEL_ID,
    MISSING_DEFAULT,
    default_model_dir,
    load_embedding_model,
)
from vllm_mlx.embeddings.worker import EmbeddingWorker

DEFAULT_ALIAS = "default"
DEFAULT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_FALLBACK_WINDOW = 512


@dataclass(frozen=True)
class EmbeddingService:
    worker: EmbeddingWorker
    model_id: str  # the id /v1/models lists
    aliases: tuple[str, ...]  # other names a request may use for it
    pinned: bool  # --embedding-model: loaded at start
    unavailable: str | None  # why /v1/embeddings cannot serve; None when it can
    window_hint: int  # the window before the model loads (from its config files)

    @property
    def names(self) -> list[str]:
        return [self.model_id, *self.aliases]

    @property
    def window(self) -> int:
        loaded = self.worker.loaded
        return loaded.max_tokens if loaded is not None else self.window_hint


def build_service(config: EmbeddingConfig, dtype: DType = DType.AUTO) -> EmbeddingService:
    """The service for ``config``; nothing loads here."""
    spec = config.model
    limits = BatchLimits(config.max_batch_size, config.max_batch_tokens)
    worker = EmbeddingWorker(lambda: load_embedding_model(spec, dtype), limits)
    if spec is None:
        folder = default_model_dir()
        return EmbeddingService(
            worker=worker,
            model_id=DEFAULT_MODEL_ID,
            aliases=(DEFAULT_HUB_ID, DEFAULT_ALIAS),
            pinned=False,
            unavailable=None if folder is not None else MISSING_DEFAULT,
            window_hint=_peek_window(folder) if folder is not None else _FALLBACK_WINDOW,
        )
    path = Path(spec).expanduser()
    local = path.is_dir()
    return EmbeddingService(
        worker=worker,
        model_id=path.name if local else spec,
        aliases=(spec, DEFAULT_ALIAS) if local and spec != path.name else (DEFAULT_ALIAS,),
        pinned=True,
        unavailable=None,
        window_hint=_peek_window(path) if local else _FALLBACK_WINDOW,
    )


def _peek_window(folder: Path) -> int:
    """The window from the config files alone (the loader computes the same)."""
    values = []
    sources = (
        ("sentence_bert_config.json", "max_seq_length"),
        ("config.json", "max_position_embeddings"),
    )
    for name, key in sources:
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and value > 0:
            values.append(value)
    return min(values) if values else _FALLBACK_WINDOW
