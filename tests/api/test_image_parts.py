"""Image parts through both adapters: HF messages with {"type": "image"}, the ordered
images, the vision prompter's ids, the GenerationRequests, and 400s that name the part."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from tests.fixtures.image_server import CAT, png
from vllm_mlx.api import media
from vllm_mlx.api.anthropic import adapter as anthropic
from vllm_mlx.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.openai import adapter as openai
from vllm_mlx.api.openai.protocol import ChatCompletionRequest
from vllm_mlx.api.requests import RequestSpec, generation_requests
from vllm_mlx.backend.model import SamplingDefaults
from vllm_mlx.backend.vision import VisionInputError
from vllm_mlx.config import AgentConfig, EngineConfig, PolicyConfig
from vllm_mlx.engine.types import ImageInput

GREEN = png(color="green")
DATA_URL = "data:image/png;base64," + base64.b64encode(CAT).decode()
IMAGE_TOKENS = 4  # what the fake prompter expands each image to


class FakeTokenizer:
    vocab_size = 1000
    template_knows_tools = True
    special_tokens: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.rendered: list[list[dict[str, Any]]] = []

    def render_chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        self.rendered.append(messages)
        return json.dumps(messages)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) % self.vocab_size for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(32 + i % 90) for i in ids)


class FakeVision:
    """Records what it is asked; ids: one per message, IMAGE_TOKENS per image."""

    def __init__(self, error: str | None = None, refuse: bytes | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error
        self.refuse = refuse  # an image the processor cannot take

    def encode_chat(
        self,
        messages: list[dict[str, Any]],
        images: Sequence[ImageInput],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> list[int]:
        if self.error or any(i.data == self.refuse for i in images):
            raise VisionInputError(self.error or "the processor cannot take this prompt")
        self.calls.append(
            {
                "messages": messages,
                "images": list(images),
                "tools": tools,
                "add_generation_prompt": add_generation_prompt,
                **template_kwargs,
            }
        )
        return [5] * len(messages) + [9] * IMAGE_TOKENS * len(images)

    def image_token_count(self, image: ImageInput) -> int:
        if image.data == self.refuse:
            raise VisionInputError("absolute aspect ratio must be smaller than 200")
        return IMAGE_TOKENS


def make_ctx(
    vision: FakeVision | None = None, knows_tools: bool = True, **agent: Any
) -> ServingContext:
    tokenizer = FakeTokenizer()
    tokenizer.template_knows_tools = knows_tools
    return ServingContext(
        engine=None,  # type: ignore[arg-type]  # the adapters never touch the engine
        tokenizer=tokenizer,  # type: ignore[arg-type]
        model_id="tiny-vlm",
        model_context_length=4096,
        engine_config=EngineConfig(),
        policy=PolicyConfig(),
        agent=AgentConfig(**agent),
        vision=vision,  # type: ignore[arg-type]
    )


def image(data: bytes) -> ImageInput:
    return asyncio.run(media.load_image(media.ImageSource("x", data=_b64(data)), _fetcher()))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _fetcher() -> Any:
    from vllm_mlx.api.image_fetch import FetchPolicy, ImageFetcher

    return ImageFetcher(FetchPolicy())


def load(sources: list[media.ImageSource], ctx: ServingContext) -> tuple[ImageInput, ...]:
    return asyncio.run(media.load_images(sources, ctx))


# -- OpenAI ----------------------------------------------------------------------------

OPENAI_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare "},
            {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "low"}},
            {"type": "text", "text": " with "},
            {"type": "image_url", "image_url": {"url": "https://images.example/b.png"}},
        ],
    },
    {"role": "assistant", "content": "They differ."},
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64(GREEN)}},
            {"type": "text", "text": "And this?"},
        ],
    },
]


def chat(messages: list[dict[str, Any]] = OPENAI_MESSAGES, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate_json(json.dumps({"messages": messages, **fields}))


def test_openai_image_sources_in_prompt_order() -> None:
    sources = openai.image_sources(chat().messages)
    assert [s.location for s in sources] == [
        "messages[1].content[1]",
        "messages[1].content[3]",
        "messages[3].content[0]",
    ]
    assert sources[0].data == _b64(CAT) and sources[2].data == _b64(GREEN)
    assert sources[1].url == "https://images.example/b.png"


def test_openai_template_messages_with_images() -> None:
    assert openai.template_messages(chat().messages, with_images=True) == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare "},
                {"type": "image"},
                {"type": "text", "text": " with "},
                {"type": "image"},
            ],
        },
        {"role": "assistant", "content": "They differ."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]},
    ]


def test_openai_prepare_chat_encodes_with_the_vision_prompter() -> None:
    vision = FakeVision()
    ctx = make_ctx(vision)
    images = (image(CAT), image(GREEN), image(CAT))
    body = chat(n=2, chat_template_kwargs={"enable_thinking": False})
    prepared = openai.prepare_chat(body, ctx, images)
    (call,) = vision.calls
    assert call["messages"] == openai.template_messages(body.messages, with_images=True)
    assert call["images"] == list(images) and call["enable_thinking"] is False
    assert prepared.prompts == [[5] * 4 + [9] * IMAGE_TOKENS * 3]
    assert prepared.images == images
    assert images[0].digest == images[2].digest != images[1].digest
    spec = RequestSpec(protocol_defaults=SamplingDefaults(), n=2, max_tokens=8)
    requests = generation_requests(ctx, "r", prepared, spec)
    assert [r.images for r in requests] == [images, images]
    assert ctx.tokenizer.rendered == []  # type: ignore[attr-defined]


def test_openai_text_requests_take_the_text_path_on_a_vision_model() -> None:
    vision = FakeVision()
    ctx = make_ctx(vision)
    body = chat([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert openai.image_sources(body.messages) == []
    prepared = openai.prepare_chat(body, ctx)
    assert vision.calls == [] and prepared.images == ()
    assert ctx.tokenizer.rendered == [[{"role": "user", "content": "hi"}]]  # type: ignore[attr-defined]
    (request,) = generation_requests(
        ctx, "r", prepared, RequestSpec(protocol_defaults=SamplingDefaults(), max_tokens=8)
    )
    assert request.images == ()


def test_openai_text_only_model_refuses_naming_the_part() -> None:
    body = chat()
    with pytest.raises(InvalidRequest) as info:
        load(openai.image_sources(body.messages), make_ctx())
    assert info.value.message.startswith(
        "messages[1].content[1]: model 'tiny-vlm' does not accept images"
    )
    assert info.value.status == 400 and info.value.code == "unsupported_modality"
    with pytest.raises(InvalidRequest) as info:  # prepare without images: never a 500
        openai.prepare_chat(body, make_ctx())
    assert info.value.message.startswith("messages[1].content[1]: this model does not accept")


@pytest.mark.parametrize("role", ["system", "assistant"])
def test_openai_images_outside_user_messages_are_refused(role: str) -> None:
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": DATA_URL}]
    body = chat([{"role": "user", "content": "hi"}, {"role": role, "content": parts}])
    assert openai.image_sources(body.messages) == []
    with pytest.raises(InvalidRequest) as info:
        openai.prepare_chat(body, make_ctx(FakeVision()))
    assert info.value.message == (
        "messages[1].content[1]: images are allowed in user messages only"
    )


def test_openai_image_url_may_be_the_url_alone() -> None:
    parts = [{"type": "input_image", "image_url": "https://images.example/a.png"}]
    (source,) = openai.image_sources(chat([{"role": "user", "content": parts}]).messages)
    assert source == media.ImageSource("messages[0].content[0]", url=parts[0]["image_url"])


def test_openai_image_url_shape_is_validated() -> None:
    for image_url in ({"url": 5}, {"url": "https://x/a.png", "detail": "ultra"}, 7):
        parts = [{"type": "image_url", "image_url": image_url}]
        with pytest.raises(ValidationError):
            chat([{"role": "user", "content": parts}])


def test_openai_bad_image_url_is_a_400_naming_the_part() -> None:
    parts = [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]
    with pytest.raises(InvalidRequest) as info:
        openai.image_sources(chat([{"role": "user", "content": parts}]).messages)
    assert info.value.message.startswith("messages[0].content[0]: image_url.url must be")


def test_processor_refusal_is_a_400() -> None:
    ctx = make_ctx(FakeVision(error="cannot decode the image: truncated"))
    with pytest.raises(InvalidRequest) as info:
        openai.prepare_chat(chat(), ctx, (image(CAT), image(CAT), image(CAT)))
    assert info.value.status == 400
    assert info.value.message == "messages: cannot decode the image: truncated"


def test_processor_refusal_names_the_image_it_cannot_take() -> None:
    ctx = make_ctx(FakeVision(refuse=GREEN))
    with pytest.raises(InvalidRequest) as info:
        openai.prepare_chat(chat(), ctx, (image(CAT), image(CAT), image(GREEN)))
    assert info.value.message == (
        "messages[3].content[0]: absolute aspect ratio must be smaller than 200"
    )
    with pytest.raises(InvalidRequest) as info:
        anthropic.prepare_messages(messages_body(), ctx, (image(CAT), image(GREEN)))
    assert info.value.message.startswith("messages[0].content[2]: absolute aspect ratio")


def test_template_kwargs_reach_the_prompter_but_cannot_name_its_images() -> None:
    vision, images = FakeVision(), (image(CAT), image(CAT), image(CAT))
    body = chat(chat_template_kwargs={"add_generation_prompt": False, "x": 1})
    openai.prepare_chat(body, make_ctx(vision), images)
    assert vision.calls[0]["add_generation_prompt"] is False and vision.calls[0]["x"] == 1
    with pytest.raises(InvalidRequest) as info:
        openai.prepare_chat(chat(chat_template_kwargs={"images": []}), make_ctx(vision), images)
    assert info.value.message == "chat_template_kwargs cannot set images"


def test_tools_are_inlined_when_the_template_ignores_them() -> None:
    vision = FakeVision()
    ctx = make_ctx(vision, knows_tools=False)
    tools = [{"type": "function", "function": {"name": "zoom", "parameters": {}}}]
    openai.prepare_chat(chat(tools=tools), ctx, (image(CAT), image(CAT), image(CAT)))
    (call,) = vision.calls
    assert call["tools"] is None
    assert "<tools>" in call["messages"][0]["content"] and "zoom" in call["messages"][0]["content"]
    assert call["messages"][1]["content"][1] == {"type": "image"}


def test_the_window_counts_the_text_before_encoding() -> None:
    ctx = replace(make_ctx(FakeVision()), longest_token_chars=1)
    parts = [{"type": "text", "text": "x" * 5000}, {"type": "image_url", "image_url": DATA_URL}]
    body = chat([{"role": "user", "content": parts}])
    with pytest.raises(InvalidRequest) as info:
        openai.prepare_chat(body, ctx, (image(CAT),))
    assert info.value.code == "context_length_exceeded"


# -- Anthropic -------------------------------------------------------------------------

ANTHROPIC_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                          "data": _b64(CAT)}},
            {"type": "image", "source": {"type": "url", "url": "https://images.example/b.png"}},
        ],
    },
    {"role": "assistant", "content": "A cat."},
    {"role": "user", "content": "Sure?"},
]  # fmt: skip


def messages_body(messages: list[dict[str, Any]] = ANTHROPIC_MESSAGES, **fields: Any) -> Any:
    return MessagesRequest.model_validate({"max_tokens": 8, "messages": messages, **fields})


def test_anthropic_image_sources_and_messages() -> None:
    body = messages_body(system="Be brief.")
    sources = anthropic.image_sources(body)
    assert [s.location for s in sources] == ["messages[0].content[1]", "messages[0].content[2]"]
    assert sources[0].data == _b64(CAT) and sources[1].url == "https://images.example/b.png"
    assert anthropic.template_messages(body, with_images=True) == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in"},
                {"type": "image"},
                {"type": "image"},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]


def test_anthropic_prepare_and_count_tokens_with_images() -> None:
    vision = FakeVision()
    ctx = make_ctx(vision)
    images = (image(CAT), image(GREEN))
    prepared = anthropic.prepare_messages(messages_body(thinking={"type": "disabled"}), ctx, images)
    assert prepared.prompts == [[5] * 3 + [9] * IMAGE_TOKENS * 2] and prepared.images == images
    assert vision.calls[0]["images"] == list(images)
    assert vision.calls[0]["enable_thinking"] is False
    request = anthropic.generation_request("msg_1", prepared, messages_body(), ctx, 1.0)
    assert request.images == images
    count = CountTokensRequest.model_validate({"messages": ANTHROPIC_MESSAGES})
    assert anthropic.count_tokens(count, ctx, images) == 3 + IMAGE_TOKENS * 2


def test_anthropic_text_only_model_refuses_naming_the_part() -> None:
    with pytest.raises(InvalidRequest) as info:
        load(anthropic.image_sources(messages_body()), make_ctx())
    assert info.value.message.startswith(
        "messages[0].content[1]: model 'tiny-vlm' does not accept images"
    )
    with pytest.raises(InvalidRequest) as info:
        anthropic.prepare_messages(messages_body(), make_ctx())
    assert info.value.message.startswith("messages[0].content[1]: this model does not accept")


def test_anthropic_images_inside_tool_results_are_refused() -> None:
    image_block = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                               "data": _b64(CAT)}}  # fmt: skip
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [image_block]}
    call = {"type": "tool_use", "id": "t1", "name": "shot", "input": {}}
    body = messages_body(
        [
            {"role": "user", "content": "Look"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ]
    )
    assert anthropic.image_sources(body) == []
    with pytest.raises(InvalidRequest) as info:
        anthropic.prepare_messages(body, make_ctx(FakeVision()))
    assert info.value.message == (
        "messages[2].content[0].content[0]: images inside tool_result are not supported"
    )


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ({"type": "base64", "media_type": "image/png", "data": "@@@"}, "not valid base64"),
        ({"type": "base64", "media_type": "image/png", "data": _b64(b"no image")}, "decoded"),
        ({"type": "url", "url": "http://192.168.1.1/a.png"}, "local or private address"),
        ({"type": "file", "file_id": "x"}, "'file' is not supported"),
    ],
)
def test_anthropic_bad_images_are_400s_naming_the_part(source: dict[str, Any], reason: str) -> None:
    content = [{"type": "text", "text": "x"}, {"type": "image", "source": source}]
    body = messages_body([{"role": "user", "content": content}])
    with pytest.raises(InvalidRequest) as info:
        load(anthropic.image_sources(body), make_ctx(FakeVision()))
    assert info.value.message.startswith("messages[0].content[1]: ")
    assert reason in info.value.message and info.value.status == 400
