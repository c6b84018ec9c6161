"""Registry: names, lazy imports, fresh instances, unknown names."""

import subprocess
import sys

import pytest

from vllm_mlx.parsers.tools import (
    ToolParser,
    UnknownToolParserError,
    create_tool_parser,
    get_tool_parser,
    tool_parser_names,
)

NAMES = [
    "auto", "mistral", "qwen", "llama", "hermes", "deepseek",
    "kimi", "granite", "nemotron", "xlam", "functionary", "glm47",
]  # fmt: skip


def test_names() -> None:
    assert tool_parser_names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_get_returns_the_named_class(name: str) -> None:
    cls = get_tool_parser(name)
    assert issubclass(cls, ToolParser)
    assert cls.name == name
    assert create_tool_parser(name) is not create_tool_parser(name)
    assert create_tool_parser(name, []).parse("hello").content == "hello"


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown tool parser 'gpt'.*hermes.*glm47"):
        get_tool_parser("gpt")
    with pytest.raises(UnknownToolParserError):
        create_tool_parser("")


def test_families_import_lazily() -> None:
    code = (
        "import sys; from vllm_mlx.parsers.tools import get_tool_parser; "
        "assert 'vllm_mlx.parsers.tools.kimi' not in sys.modules; get_tool_parser('kimi'); "
        "assert 'vllm_mlx.parsers.tools.kimi' in sys.modules; "
        "assert 'vllm_mlx.parsers.tools.glm47' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
