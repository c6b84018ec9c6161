"""Anthropic Messages API request bodies (strict types, unknown fields ignored), and
the response bodies /openapi.json documents (``render.py`` writes them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP_SEQUENCES = 16


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextBlock(_Strict):
    type: Literal["text"]
    text: str


class ImageBlock(_Strict):
    type: Literal["image", "document"]
    source: dict[str, Any] = Field(default_factory=dict)


class ToolUseBlock(_Strict):
    type: Literal["tool_use", "server_tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool = False


class ThinkingBlock(_Strict):
    type: Literal["thinking"]
    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(_Strict):
    # One literal per block type: a discriminator value shared by two names documents
    # a schema that OpenAPI tools read as narrower than what is accepted.
    type: Literal["redacted_thinking"]
    data: str | None = None


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class Message(_Strict):
    # Claude Code puts environment notes in "system" entries between the turns.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(_Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    type: str | None = None  # custom tools only; server tool types are refused in the adapter


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(_Strict):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=1)


class OutputConfig(_Strict):
    effort: Literal["low", "medium", "high", "max"] | None = None


CLEAR_TOOL_USES = "clear_tool_uses_20250919"


class ContextEdit(_Strict):
    """One context-management edit; ``keep``/``trigger`` are {"type": ..., "value": N}."""

    type: Literal["clear_thinking_20251015", "clear_tool_uses_20250919"]
    keep: dict[str, Any] | Literal["all"] | None = None
    trigger: dict[str, Any] | None = None
    clear_at_least: dict[str, Any] | None = None
    exclude_tools: list[str] | None = None
    clear_tool_inputs: bool | None = None


class ContextManagement(_Strict):
    edits: list[ContextEdit] = Field(default_factory=list)


def _has_turn(messages: list[Message]) -> list[Message]:
    if all(m.role == "system" for m in messages):
        raise ValueError("messages must hold at least one user or assistant turn")
    return messages


class MessagesRequest(_Strict):
    model: str = "default"
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    context_management: ContextManagement | None = None
    include_diagnostics: bool = False  # adds "diagnostics" (api/diagnostics.py) at level basic
    diagnostics_level: Literal["basic", "deep"] | None = None  # any level adds it too

    _turns = field_validator("messages")(_has_turn)

    @field_validator("stop_sequences")
    @classmethod
    def _check_stops(cls, stops: list[str] | None) -> list[str] | None:
        if stops and len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if stops and any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops


class CountTokensRequest(_Strict):
    model: str = "default"
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    context_management: ContextManagement | None = None

    _turns = field_validator("messages")(_has_turn)


# -- response bodies (documentation: render.py writes them) ---------------------------


class MessageUsage(BaseModel):
    input_tokens: int  # prompt tokens not read from the cache
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[TextBlock | ThinkingBlock | ToolUseBlock]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: MessageUsage
    diagnostics: dict[str, Any] | None = None  # asked for; streamed, it is in message_delta


class StreamEvent(BaseModel):
    """One event of a stream (``event: <type>`` then ``data: <this>``); the other fields
    depend on the type, as in Anthropic's streaming documentation."""

    type: Literal[
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
    ]


class CountTokensResponse(BaseModel):
    input_tokens: int
