"""The registry: names, lazy lookup, unknown names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vllm_mlx.parsers.reasoning as reasoning_pkg
from vllm_mlx.parsers.reasoning import (
    ReasoningParser,
    get_reasoning_parser,
    reasoning_parser_names,
)


def test_names() -> None:
    assert reasoning_parser_names() == ("deepseek_r1", "qwen3")


@pytest.mark.parametrize("name", reasoning_parser_names())
def test_lookup_returns_the_family_class(name: str) -> None:
    parser_cls = get_reasoning_parser(name)
    assert issubclass(parser_cls, ReasoningParser)
    assert parser_cls.name == name
    assert parser_cls() is not parser_cls()


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown reasoning parser 'qwen2'") as info:
        get_reasoning_parser("qwen2")
    for name in reasoning_parser_names():
        assert name in str(info.value)


def test_parsers_import_no_http_or_model_libraries() -> None:
    banned = {"fastapi", "pydantic", "starlette", "mlx", "mlx_lm"}
    for path in Path(reasoning_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & banned, (path.name, roots)
