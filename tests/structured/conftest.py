"""The tiny llama's tokenizer and its llguidance view, shared by the structured tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vllm_mlx.structured import tokenizer_info


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_path))


@pytest.fixture(scope="session")
def tiny_info(tiny_tokenizer: Any) -> Any:
    return tokenizer_info(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_eos(tiny_tokenizer: Any) -> tuple[int, ...]:
    return (int(tiny_tokenizer.eos_token_id),)
