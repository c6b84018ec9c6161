import mcp_types
import pytest

from vllm_mlx.mcp.catalog import (
    build_catalog,
    check_arguments,
    describe,
    error_result,
    split_qualified_name,
    to_tool_result,
)
from vllm_mlx.mcp.types import InvalidArguments, ServerSpec, Transport

SPEC = ServerSpec(name="srv", transport=Transport.STDIO, command="x")
OBJECT = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def tool(name: str, schema: dict[str, object] | None = None) -> mcp_types.Tool:
    return mcp_types.Tool(name=name, description=f"{name} tool", input_schema=schema or OBJECT)


def test_catalog_names_and_filters() -> None:
    spec = ServerSpec(
        name="srv", transport=Transport.STDIO, command="x", blocked_tools=frozenset({"hidden"})
    )
    catalog = build_catalog(
        spec,
        [
            tool("ok"),
            tool("hidden"),
            tool("has.dot"),  # not a valid OpenAI function name
            tool("bad_schema", {"type": "object", "properties": {"n": {"type": 5}}}),
        ],
    )
    assert list(catalog) == ["ok"]
    info = catalog["ok"].info
    assert (info.server, info.name, info.qualified_name, info.description) == (
        "srv",
        "ok",
        "srv__ok",
        "ok tool",
    )


def test_check_arguments() -> None:
    entry = build_catalog(SPEC, [tool("t")])["t"]
    check_arguments(entry, {"n": 1})
    with pytest.raises(InvalidArguments, match=r"^arguments: 'n' is a required property$"):
        check_arguments(entry, {})
    with pytest.raises(InvalidArguments, match=r"^arguments\.n: 'x' is not of type 'integer'$"):
        check_arguments(entry, {"n": "x"})


def test_split_qualified_name() -> None:
    assert split_qualified_name("srv__read__file") == ("srv", "read__file")
    assert split_qualified_name("srv__") is None
    assert split_qualified_name("plain") is None


def test_results_keep_blocks_and_structured_content() -> None:
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(type="text", text="caption"),
            mcp_types.ImageContent(type="image", data="aGk=", mime_type="image/png"),
        ],
        structured_content={"n": 1},
    )
    out = to_tool_result("srv__t", result)
    assert out.content == (
        {"type": "text", "text": "caption"},
        {"type": "image", "data": "aGk=", "mimeType": "image/png"},
    )
    assert (out.structured_content, out.is_error, out.error_message) == ({"n": 1}, False, None)

    failed = to_tool_result(
        "srv__t",
        mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text="no\nluck")], is_error=True
        ),
    )
    assert (failed.is_error, failed.error_message) == (True, "no luck")
    assert error_result("srv__t", "timed out after 1 s").content[0]["text"] == "timed out after 1 s"


def test_describe_unwraps_groups() -> None:
    group = ExceptionGroup("tg", [ConnectionError("refused")])
    assert describe(group) == "ConnectionError: refused"
    assert describe(TimeoutError()) == "TimeoutError"
