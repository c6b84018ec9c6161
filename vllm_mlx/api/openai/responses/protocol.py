"""OpenAI Responses API request bodies (unknown fields ignored), and the response bodies
/openapi.json documents (``render.py`` writes them).

``input`` items and ``tools`` are kept as raw objects here and read one by one in
``items.py``: an unknown item or tool type must be a 400 that names it, which a
pydantic union would bury in a list of branch errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    # Clients send fields we have no use for (include, prompt_cache_key, ...): ignore them.
    model_config = ConfigDict(strict=True, extra="ignore")


class TextFormat(_Strict):
    """``text.format``: plain text, any JSON object, or JSON matching ``schema``."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Strict):
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(_Strict):
    model: str = "default"
    input: str | list[dict[str, Any]] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    store: bool = True  # OpenAI's default: kept for previous_response_id and GET
    previous_response_id: str | None = None
    stream: bool = False
    background: bool = False
    truncation: Literal["auto", "disabled"] | None = None

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is not None and len(metadata) > 16:
            raise ValueError("metadata holds at most 16 pairs")
        return metadata


# -- response bodies (documentation: render.py writes them) ---------------------------


class OutputItem(BaseModel):
    """A ``message``, ``function_call`` or ``reasoning`` item; fields as OpenAI's."""

    model_config = ConfigDict(extra="allow")
    type: Literal["message", "function_call", "reasoning"]
    id: str


class InputTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens read from the prefix cache


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int


class ResponseUsage(BaseModel):
    input_tokens: int  # the whole prompt, cached tokens included
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class Response(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None
    incomplete_details: dict[str, str] | None
    error: dict[str, str] | None


class ResponseStreamEvent(BaseModel):
    """One event of a stream (``event: <type>`` then ``data: <this>``)."""

    model_config = ConfigDict(extra="allow")
    type: str
    sequence_number: int


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response.deleted"]
    deleted: bool
