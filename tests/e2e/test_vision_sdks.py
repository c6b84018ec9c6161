"""Images through both official SDKs, to a real server running a tiny Qwen2-VL.

Images go inline (base64) and by URL, served by a local HTTP server on
127.0.0.1: the server under test runs with ``--allow-local-image-urls``; a second
one without it must refuse the same loopback URL with a 400, before fetching it.
A text-only server refuses image parts with a 400 naming the part.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

pytest.importorskip("mlx_vlm")

from tests.conftest import LaunchServer
from tests.fixtures.image_server import ImageServer, Route, image_server
from tests.fixtures.server import openai_client
from tests.fixtures.tiny_vlms import build_tiny_vlm, make_image

RED = make_image(1)  # 56x56: 4 image tokens on the tiny Qwen2-VL
NOISE = make_image(2, (112, 84))  # 12 image tokens
MAX_TOKENS = 4


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def vlm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "qwen2_vl", "qwen2_vl")


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    routes = {"/red.png": Route(body=RED), "/noise.png": Route(body=NOISE)}
    with image_server(routes) as server:
        yield server


@pytest.fixture(scope="module")
def vlm_server(launch_server: LaunchServer, vlm_path: Path) -> str:
    return launch_server("--allow-local-image-urls", model=vlm_path).base_url


@pytest.fixture(scope="module")
def strict_server(launch_server: LaunchServer, vlm_path: Path) -> str:
    return launch_server(model=vlm_path).base_url


@pytest.fixture(scope="module")
def oai(vlm_server: str) -> Iterator[openai.OpenAI]:
    with openai_client(vlm_server) as client:
        yield client


@pytest.fixture(scope="module")
def claude(vlm_server: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=vlm_server, api_key="x", max_retries=0) as client:
        yield client


def openai_parts(*urls: str, text: str = "What is this?") -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": parts}]


def anthropic_blocks(*sources: dict[str, Any], text: str = "What is this?") -> Any:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}]
    blocks += [{"type": "image", "source": source} for source in sources]
    return [{"role": "user", "content": blocks}]


def base64_source(data: bytes) -> dict[str, Any]:
    return {"type": "base64", "media_type": "image/png", "data": b64(data)}


# -- OpenAI ----------------------------------------------------------------------------


def test_openai_sdk_sends_base64_and_url_images(oai: openai.OpenAI, images: ImageServer) -> None:
    client = oai
    text_only = client.chat.completions.create(
        model="default", messages=openai_parts(), max_tokens=MAX_TOKENS, temperature=0
    )
    seen = len(images.hosts)
    messages = openai_parts(f"data:image/png;base64,{b64(RED)}", images.url("/noise.png"))
    out = client.chat.completions.create(
        model="default",
        messages=messages,
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"include_diagnostics": True},
    )
    assert isinstance(out.choices[0].message.content, str)
    assert out.usage is not None and out.usage.completion_tokens >= 1
    assert text_only.usage is not None
    # Two images: the template's vision markers plus 4 + 12 image tokens.
    assert out.usage.prompt_tokens >= text_only.usage.prompt_tokens + 16
    assert (out.model_extra or {})["diagnostics"]["visual_inputs"] == 2
    assert len(images.hosts) == seen + 1  # the URL image was fetched once


def test_openai_sdk_streams_with_an_image(oai: openai.OpenAI, images: ImageServer) -> None:
    stream = oai.chat.completions.create(
        model="default",
        messages=openai_parts(images.url("/red.png")),
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
    )
    finishes = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finishes[-1] in ("stop", "length")


def test_same_image_inline_or_by_url_gives_the_same_answer(
    oai: openai.OpenAI, images: ImageServer
) -> None:
    def answer(url: str) -> str | None:
        out = oai.chat.completions.create(
            model="default", messages=openai_parts(url), max_tokens=MAX_TOKENS, temperature=0
        )
        return out.choices[0].message.content

    assert answer(f"data:image/png;base64,{b64(RED)}") == answer(images.url("/red.png"))


# -- Anthropic -------------------------------------------------------------------------


def test_anthropic_sdk_sends_base64_and_url_images(
    claude: anthropic.Anthropic, images: ImageServer
) -> None:
    url = {"type": "url", "url": images.url("/noise.png")}
    messages = anthropic_blocks(base64_source(RED), url)
    counted = claude.messages.count_tokens(model="default", messages=messages)
    out = claude.messages.create(
        model="default",
        messages=messages,
        max_tokens=MAX_TOKENS,
        extra_body={"temperature": 0.0, "diagnostics_level": "basic"},
    )
    assert out.content and out.content[0].type == "text"
    usage = out.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) == counted.input_tokens
    # The SDK types Message.diagnostics (Anthropic's own); ours parse into its extras.
    assert out.diagnostics is not None
    assert (out.diagnostics.model_extra or {})["visual_inputs"] == 2


def test_anthropic_sdk_streams_with_an_image(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="default",
        messages=anthropic_blocks(base64_source(NOISE)),
        max_tokens=MAX_TOKENS,
        extra_body={"temperature": 0.0},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens")


# -- refusals: 400s naming the part, never a fetch of a refused URL ----------------------


def test_without_the_flag_a_loopback_url_is_refused(
    strict_server: str, images: ImageServer
) -> None:
    seen = len(images.hosts)
    with openai_client(strict_server) as client, pytest.raises(openai.BadRequestError) as oa:
        client.chat.completions.create(
            model="default", messages=openai_parts(images.url("/red.png")), max_tokens=2
        )
    assert "messages[0].content[1]: image URL host '127.0.0.1' is a local" in str(oa.value)
    with (
        anthropic.Anthropic(base_url=strict_server, api_key="x", max_retries=0) as sdk,
        pytest.raises(anthropic.BadRequestError) as an,
    ):
        sdk.messages.create(
            model="default",
            messages=anthropic_blocks({"type": "url", "url": images.url("/red.png")}),
            max_tokens=2,
        )
    assert "messages[0].content[1]: image URL host '127.0.0.1' is a local" in str(an.value)
    assert len(images.hosts) == seen  # refused before connecting


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", "image could not be decoded"),
        ("data:image/png;base64,@@@", "image data is not valid base64"),
        ("/text", "image URL sent content type 'text/plain', not an image"),
        ("/broken.png", "image could not be decoded"),
        ("/missing", "image URL answered HTTP 404"),
        # Decodes, but Qwen2-VL's processor refuses an aspect ratio over 200.
        (f"data:image/png;base64,{b64(make_image(3, (2000, 8)))}", "the processor cannot take"),
    ],
)
def test_bad_images_are_400s(
    oai: openai.OpenAI, images: ImageServer, url: str, reason: str
) -> None:
    url = images.url(url) if url.startswith("/") else url
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="default", messages=openai_parts(url), max_tokens=2)
    assert info.value.status_code == 400
    assert f"messages[0].content[1]: {reason}" in str(info.value)


def test_text_only_model_refuses_images_naming_the_part(tiny_server: str) -> None:
    with openai_client(tiny_server) as client, pytest.raises(openai.BadRequestError) as oa:
        client.chat.completions.create(
            model="default",
            messages=openai_parts(f"data:image/png;base64,{b64(RED)}"),
            max_tokens=2,
        )
    assert "messages[0].content[1]: model" in str(oa.value)
    assert "does not accept images" in str(oa.value)
    with (
        anthropic.Anthropic(base_url=tiny_server, api_key="x", max_retries=0) as sdk,
        pytest.raises(anthropic.BadRequestError) as an,
    ):
        sdk.messages.count_tokens(model="default", messages=anthropic_blocks(base64_source(RED)))
    assert "messages[0].content[1]: model" in str(an.value)
