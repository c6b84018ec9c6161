"""Image parts → ImageInputs (api/media.py) and the SSRF-safe fetcher (api/image_fetch.py).

Fetches go to a local http.server through :class:`LoopbackNat`, which dials
127.0.0.1 only: no test sends a packet beyond loopback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from PIL import Image

from tests.api.test_adapter import make_ctx
from tests.fixtures.image_server import (
    BIG,
    CAT,
    PUBLIC_ADDRESS,
    ImageServer,
    LoopbackNat,
    image_server,
    jpeg,
    png,
    stub_resolver,
)
from vllm_mlx.api import media
from vllm_mlx.api.context import ServingContext
from vllm_mlx.api.errors import InvalidRequest
from vllm_mlx.api.image_fetch import (
    FetchPolicy,
    ImageError,
    ImageFetcher,
    is_public,
)
from vllm_mlx.cli import build_parser, serve_config
from vllm_mlx.config import PolicyConfig

LOC = "messages[0].content[1]"
PUBLIC_HOST = "images.example"  # the stub resolves it to PUBLIC_ADDRESS (NAT'd to loopback)
RESOLVER = stub_resolver(
    {
        PUBLIC_HOST: [PUBLIC_ADDRESS],
        "local.test": ["127.0.0.1"],
        "internal.test": ["192.168.1.1"],
        "mixed.test": [PUBLIC_ADDRESS, "10.1.2.3"],
        "v6-local.test": ["fd12:3456::1"],
        "v6-mapped.test": ["::ffff:10.0.0.1"],
    }
)


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with image_server() as running:
        yield running


def fetch(url: str, nat: LoopbackNat | None = None, **policy: Any) -> bytes:
    nat = nat if nat is not None else LoopbackNat([PUBLIC_ADDRESS])
    fetcher = ImageFetcher(FetchPolicy(**policy), resolver=RESOLVER, backend=nat)
    return asyncio.run(fetcher.fetch(url))


def refused(url: str, nat: LoopbackNat | None = None, **policy: Any) -> str:
    with pytest.raises(ImageError) as info:
        fetch(url, nat, **policy)
    return str(info.value)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the address rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1",
        "255.255.255.255", "192.0.2.1", "198.18.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
        "2002:c0a8:0101::1", "64:ff9b::a00:1",
    ],
)  # fmt: skip
def test_local_private_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "2002:808:808::1"]
)
def test_global_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


# -- fetching: what the address rule refuses, before any connection ---------------------


def test_loopback_url_is_refused_by_default_without_connecting(server: ImageServer) -> None:
    nat, requests = LoopbackNat(), len(server.hosts)
    message = refused(server.url("/cat.png"), nat)
    assert "local or private address (127.0.0.1)" in message
    assert "--allow-local-image-urls" in message
    assert nat.dialed == [] and len(server.hosts) == requests


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("local.test", "127.0.0.1"),
        ("internal.test", "192.168.1.1"),
        ("mixed.test", "10.1.2.3"),  # one private answer refuses the host
        ("v6-local.test", "fd12:3456::1"),
        ("v6-mapped.test", "::ffff:10.0.0.1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("169.254.169.254", "169.254.169.254"),
    ],
)
def test_names_resolving_to_local_addresses_are_refused_before_connecting(
    host: str, address: str
) -> None:
    nat = LoopbackNat([address])
    with pytest.raises(ImageError) as info:
        fetch(f"http://{host}/x.png", nat)
    assert nat.dialed == []
    assert f"({ipaddress.ip_address(address)})" in str(info.value)


def test_the_flag_allows_loopback(server: ImageServer) -> None:
    assert fetch(server.url("/cat.png"), LoopbackNat(), allow_local=True) == CAT
    nat = LoopbackNat()
    assert fetch(server.url("/cat.png", "local.test"), nat, allow_local=True) == CAT
    assert nat.dialed == ["127.0.0.1"]
    assert server.hosts[-1] == f"local.test:{server.port}"  # the URL's host, not the address


def test_public_host_is_fetched(server: ImageServer) -> None:
    nat = LoopbackNat([PUBLIC_ADDRESS])
    assert fetch(server.url("/cat.png", PUBLIC_HOST), nat) == CAT
    assert nat.dialed == [PUBLIC_ADDRESS]
    assert fetch(server.url("/cat.jpg", PUBLIC_HOST)) == jpeg()


def test_the_connected_peer_is_checked(server: ImageServer) -> None:
    # The guard allowed the dialed address, but the socket reached loopback.
    nat = LoopbackNat([PUBLIC_ADDRESS], report_dialed=False)
    assert "(127.0.0.1)" in refused(server.url("/cat.png", PUBLIC_HOST), nat)


# -- redirects: every hop checked again ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "address"),
    [
        ("/to-private", "10.0.0.1"),
        ("/to-internal", "192.168.1.1"),
        ("/to-loopback-v6", "::1"),
        ("/to-mapped-v6", "::ffff:127.0.0.1"),
        ("/to-metadata", "169.254.169.254"),
    ],
)
def test_redirect_to_a_local_address_is_refused_without_connecting(
    server: ImageServer, path: str, address: str
) -> None:
    nat = LoopbackNat([PUBLIC_ADDRESS])
    shown = ipaddress.ip_address(address)
    assert f"({shown})" in refused(server.url(path, PUBLIC_HOST), nat)
    assert nat.dialed == [PUBLIC_ADDRESS]  # the first hop only


def test_redirects_are_followed_a_few_times(server: ImageServer) -> None:
    assert fetch(server.url("/to-cat", PUBLIC_HOST)) == CAT
    assert "more than 3 times" in refused(server.url("/loop", PUBLIC_HOST))
    assert "without a Location" in refused(server.url("/no-location", PUBLIC_HOST))
    assert "http(s)" in refused(server.url("/to-file", PUBLIC_HOST))


# -- what the response must be ---------------------------------------------------------


def test_content_type_must_be_an_image(server: ImageServer) -> None:
    assert "'text/plain', not an image" in refused(server.url("/text", PUBLIC_HOST))
    assert "'none', not an image" in refused(server.url("/no-type", PUBLIC_HOST))


def test_size_cap_with_and_without_content_length(server: ImageServer) -> None:
    cap = len(BIG) - 1
    for path in ("/big.png", "/big-unsized.png"):
        assert "larger than" in refused(server.url(path, PUBLIC_HOST), max_bytes=cap)
        assert fetch(server.url(path, PUBLIC_HOST), max_bytes=len(BIG)) == BIG


def test_timeout_unreachable_and_http_errors(server: ImageServer) -> None:
    assert "did not answer within 0.3 s" in refused(
        server.url("/slow.png", PUBLIC_HOST), timeout_s=0.3
    )
    assert "HTTP 404" in refused(server.url("/missing", PUBLIC_HOST))
    closed = _closed_port()
    assert "could not be fetched" in refused(f"http://127.0.0.1:{closed}/x.png", allow_local=True)
    assert "could not be resolved" in refused("http://nowhere.test/x.png")


def test_url_text_is_percent_encoded_and_hosts_idna_encoded(server: ImageServer) -> None:
    assert fetch(server.url("/cat.png?x=ü#fragment", PUBLIC_HOST)) == CAT
    assert "HTTP 404" in refused(server.url("/cat.png\r\nX-Injected: 1", PUBLIC_HOST))
    nat = LoopbackNat([PUBLIC_ADDRESS])
    resolver = stub_resolver({"xn--tst-qla.example": [PUBLIC_ADDRESS]})
    fetcher = ImageFetcher(FetchPolicy(), resolver=resolver, backend=nat)
    assert asyncio.run(fetcher.fetch(server.url("/cat.png", "täst.example"))) == CAT
    assert server.hosts[-1] == f"xn--tst-qla.example:{server.port}"


@pytest.mark.parametrize(
    "url",
    ["ftp://images.example/x.png", "file:///etc/passwd", "gopher://x/", "http:///x.png",
     "http://user:pw@images.example/x.png", "http://images.example:99999/x.png"],
)  # fmt: skip
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    nat = LoopbackNat([PUBLIC_ADDRESS])
    refused(url, nat)
    assert nat.dialed == []


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- parts → sources -------------------------------------------------------------------


def test_openai_data_url_and_http_url() -> None:
    source = media.openai_image(f"data:image/png;base64,{b64(CAT)}", LOC)
    assert source == media.ImageSource(LOC, data=b64(CAT))
    source = media.openai_image("https://x.test/a.png", LOC)
    assert source == media.ImageSource(LOC, url="https://x.test/a.png")
    assert media.openai_image("HTTP://x.test/a.png", LOC).url == "HTTP://x.test/a.png"
    source = media.openai_image("DATA:image/jpeg;charset=x;base64,/9j/", LOC)
    assert source.data == "/9j/"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png,rawbytes", "must be base64"),
        ("data:text/plain;base64,aGk=", "'text/plain' is not an image"),
        ("data:;base64,aGk=", "'' is not an image"),
        ("file:///etc/passwd", "data: URL or an http(s) URL"),
        ("", "data: URL or an http(s) URL"),
        (None, "data: URL or an http(s) URL"),
    ],
)
def test_bad_openai_image_urls(url: str | None, reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        media.openai_image(url, LOC)
    assert info.value.message.startswith(f"{LOC}: ")
    assert reason in info.value.message and info.value.status == 400


def test_anthropic_sources() -> None:
    source = {"type": "base64", "media_type": "image/png", "data": b64(CAT)}
    assert media.anthropic_image(source, LOC) == media.ImageSource(LOC, data=b64(CAT))
    url = {"type": "url", "url": "https://x.test/a.png"}
    assert media.anthropic_image(url, LOC) == media.ImageSource(LOC, url="https://x.test/a.png")


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ({"type": "base64", "media_type": "text/plain", "data": "aGk="}, "media_type"),
        ({"type": "base64", "media_type": "image/png"}, "source.data"),
        ({"type": "url", "url": "ftp://x/a.png"}, "http(s)"),
        ({"type": "file", "file_id": "f"}, "'file' is not supported"),
        ({}, "'None' is not supported"),
    ],
)
def test_bad_anthropic_sources(source: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        media.anthropic_image(source, LOC)
    assert info.value.message.startswith(f"{LOC}: ") and reason in info.value.message


# -- base64 and decoding -----------------------------------------------------------------


def test_base64_tolerates_line_breaks_and_missing_padding() -> None:
    text = b64(CAT)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert media.decode_base64(wrapped, 10**6) == CAT
    assert media.decode_base64(text.rstrip("="), 10**6) == CAT


def test_base64_errors_and_cap() -> None:
    with pytest.raises(ImageError, match="not valid base64"):
        media.decode_base64("not base64!!", 10**6)
    with pytest.raises(ImageError, match="larger than"):
        media.decode_base64(b64(BIG), len(BIG) - 1)
    assert media.decode_base64(b64(BIG), len(BIG)) == BIG


def test_check_image_accepts_common_formats() -> None:
    for data in (CAT, jpeg()):
        media.check_image(data)


@pytest.mark.parametrize(
    "data", [b"", b"hello", CAT[:40], b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b"%!PS-Adobe-3.0 EPSF"]
)
def test_check_image_refuses_what_does_not_decode(data: bytes) -> None:
    with pytest.raises(ImageError, match="could not be decoded"):
        media.check_image(data)


def test_check_image_refuses_decompression_bombs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="too many pixels"):
        media.check_image(png((20, 20)))


# -- load_images: the request's images, or a 400 naming the part -------------------------


class FakeVision:
    def encode_chat(self, *args: Any, **kwargs: Any) -> list[int]:
        return [1]

    def image_token_count(self, image: Any) -> int:
        return 4


def vision_ctx(**policy: Any) -> ServingContext:
    return replace(make_ctx(policy=PolicyConfig(**policy)), vision=FakeVision())  # type: ignore[arg-type]


class NoFetch(ImageFetcher):
    def __init__(self) -> None:
        super().__init__(FetchPolicy())

    async def fetch(self, url: str) -> bytes:
        raise AssertionError("fetched")


def load(sources: list[media.ImageSource], ctx: ServingContext, fetcher: Any = None) -> Any:
    return asyncio.run(media.load_images(sources, ctx, fetcher))


def test_images_load_in_order_with_their_digests(server: ImageServer) -> None:
    sources = [
        media.ImageSource("messages[0].content[0]", data=b64(CAT)),
        media.ImageSource("messages[0].content[1]", url=server.url("/cat.jpg", PUBLIC_HOST)),
        media.ImageSource("messages[2].content[0]", data=b64(png(color="green"))),
    ]
    fetcher = ImageFetcher(FetchPolicy(), resolver=RESOLVER, backend=LoopbackNat([PUBLIC_ADDRESS]))
    images = load(sources, vision_ctx(), fetcher)
    assert [i.data for i in images] == [CAT, jpeg(), png(color="green")]
    assert [i.digest for i in images] == [hashlib.sha256(i.data).hexdigest() for i in images]
    assert load([], make_ctx()) == ()


def test_text_only_model_refuses_the_first_image_before_any_fetch() -> None:
    sources = [media.ImageSource("messages[3].content[2]", url="http://10.0.0.1/x.png")]
    with pytest.raises(InvalidRequest) as info:
        load(sources, make_ctx(), NoFetch())
    assert info.value.message.startswith("messages[3].content[2]: model 'tiny'")
    assert "does not accept images" in info.value.message
    assert info.value.code == "unsupported_modality" and info.value.status == 400


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (media.ImageSource(LOC, data="@@@@"), "image data is not valid base64"),
        (media.ImageSource(LOC, data=b64(b"GIF89a garbage")), "image could not be decoded"),
        (media.ImageSource(LOC, url="http://127.0.0.1:9/x.png"), "image URL host '127.0.0.1'"),
    ],
)
def test_bad_images_are_400s_naming_the_part(source: media.ImageSource, reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        load([media.ImageSource("messages[0].content[0]", data=b64(CAT)), source], vision_ctx())
    assert info.value.message.startswith(f"{LOC}: {reason}"), info.value.message
    assert info.value.status == 400 and info.value.param == "messages"


def test_default_fetcher_follows_the_servers_flag(server: ImageServer) -> None:
    # The real resolver and network, loopback only: the literal 127.0.0.1 needs no DNS.
    source = media.ImageSource(LOC, url=server.url("/cat.png"))
    (image,) = load([source], vision_ctx(allow_local_image_urls=True))
    assert image.data == CAT
    with pytest.raises(InvalidRequest, match="local or private address"):
        load([source], vision_ctx())


def test_allow_local_image_urls_option() -> None:
    def policy(*args: str) -> PolicyConfig:
        return serve_config(build_parser().parse_args(["serve", *args])).policy

    assert policy().allow_local_image_urls is False
    assert policy("--allow-local-image-urls").allow_local_image_urls is True
