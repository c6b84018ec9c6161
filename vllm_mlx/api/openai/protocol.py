"""OpenAI request bodies, and the response bodies /openapi.json documents.

Requests are strict: a wrong type is a 400, never a silent coercion. Responses
are written by ``chat.py``, ``completions.py`` and ``embeddings.py``; their models here
only describe them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# OpenAI's documented limits, kept so clients see the same errors as upstream.
MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5
MAX_N = 16
MAX_EMBEDDING_INPUTS = 2048  # inputs per /v1/embeddings request
_TOKEN_ID = re.compile(r"-?[0-9]+")


class _Strict(BaseModel):
    # Unknown fields are ignored, as OpenAI and vLLM do; known ones are typed strictly.
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str  # data:image/...;base64,... or http(s)://... (api/media.py reads it)
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the processor decides


class ImagePart(_Strict):
    type: Literal["image_url", "input_image", "image"]
    image_url: ImageURL | str | None = None  # the URL object, or the URL alone


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: str
    arguments: str = "{}"


class ToolCall(_Strict):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


# What _content_present checks, for /openapi.json: content, or an assistant's tool calls.
_CONTENT_RULE: dict[str, Any] = {
    "anyOf": [
        {"required": ["content"], "properties": {"content": {"type": ["string", "array"]}}},
        {
            "required": ["role", "tool_calls"],
            "properties": {
                "role": {"const": "assistant"},
                "tool_calls": {"type": "array", "minItems": 1},
            },
        },
    ]
}


class ChatMessage(_Strict):
    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra=_CONTENT_RULE)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a '{self.role}' message needs content")
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class SamplingFields(_Strict):
    """Fields shared by chat and text completions."""

    model: str = "default"
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # The floor keeps penalised logits finite (5e-324 is 0 in float32: NaN logprobs).
    repetition_penalty: float | None = Field(default=None, ge=0.01, le=10.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM extension, used by benchmarks
    include_diagnostics: bool = False  # adds "diagnostics" (api/diagnostics.py) at level basic
    diagnostics_level: Literal["basic", "deep"] | None = None  # any level adds it too
    repetition_policy_override: Literal["safe", "strict"] | None = None  # trusted clients only

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            if not _TOKEN_ID.fullmatch(key):
                raise ValueError(f"key '{key}' is not a token id")
            if not -100.0 <= value <= 100.0:
                raise ValueError(f"bias for token {key} must be in [-100, 100]")
        return bias

    @field_validator("stream_options")
    @classmethod
    def _check_stream_options(cls, opts: StreamOptions | None, info: ValidationInfo) -> Any:
        if opts is not None and not info.data.get("stream"):
            raise ValueError("only allowed when stream is true")
        return opts

    @property
    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("chat_template_kwargs")
    @classmethod
    def _check_template_kwargs(cls, kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
        # The template gets these from the request's own fields.
        if taken := sorted({"messages", "tools"} & set(kwargs or {})):
            raise ValueError(f"cannot set {' or '.join(taken)}; send them as request fields")
        return kwargs

    @field_validator("top_logprobs")
    @classmethod
    def _check_top_logprobs(cls, top: int | None, info: ValidationInfo) -> int | None:
        if top and not info.data.get("logprobs"):
            raise ValueError("requires logprobs to be true")
        return top


def _non_empty_prompt(schema: dict[str, Any]) -> None:
    """The JSON schema of what completion_prompts accepts: no empty text or list, ids >= 0."""
    bounds = {"string": ("minLength", 1), "array": ("minItems", 1), "integer": ("minimum", 0)}
    if schema.get("type") in bounds:
        key, value = bounds[schema["type"]]
        schema[key] = value
    children = list(schema.get("anyOf", []))
    if "items" in schema:
        children.append(schema["items"])
    for child in children:
        _non_empty_prompt(child)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        json_schema_extra=_non_empty_prompt
    )
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)


EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(_Strict):
    """``POST /v1/embeddings``: OpenAI's body, plus ``truncate``."""

    model: str = "default"
    input: EmbeddingInput = Field(json_schema_extra=_non_empty_prompt)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    # vllm-mlx: cut inputs longer than the model's window to its length (keeping the
    # end-of-text token, as sentence-transformers does) instead of refusing them (400).
    truncate: bool = False

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        items: list[str] | list[int] | list[list[int]] = (
            [value] if isinstance(value, str) else value
        )
        if not items:
            raise ValueError("must not be empty")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        for index, item in enumerate(items):
            if isinstance(item, int):
                if item < 0:
                    raise ValueError(f"input[{index}]: token ids are not negative")
            elif not item:
                what = "string" if isinstance(item, str) else "token list"
                raise ValueError(f"input[{index}] is an empty {what}")
            elif isinstance(item, list) and min(item) < 0:
                raise ValueError(f"input[{index}]: token ids are not negative")
        return value


# -- response bodies (documentation: chat.py and completions.py write them) ----------

FinishReasonName = Literal["stop", "length", "tool_calls"]


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens served from the prefix cache


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]  # the token's UTF-8 bytes


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning: str | None = None  # with a reasoning parser; reasoning_content repeats it
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReasonName
    stop_reason: str | None = None  # the stop string that ended the choice (vLLM)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    diagnostics: dict[str, Any] | None = None  # with include_diagnostics


class ChunkFunction(BaseModel):
    name: str | None = None  # in a call's first chunk only
    arguments: str


class ChunkToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkFunction


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: FinishReasonName | None
    stop_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a chat stream, which ends with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None  # with stream_options.include_usage: set in the last chunk
    # With diagnostics: on the usage chunk, else on the chunk that finishes the last choice.
    diagnostics: dict[str, Any] | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReasonName | None  # null in stream chunks but the last
    stop_reason: str | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    diagnostics: dict[str, Any] | None = None  # with include_diagnostics


class CompletionChunk(BaseModel):
    """One ``data:`` event of a completion stream, which ends with ``data: [DONE]``."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    diagnostics: dict[str, Any] | None = None  # as in ChatCompletionChunk


class EmbeddingData(BaseModel):
    object: Literal["embedding"]
    index: int  # the input's position in the request
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
