"""Auto-detection: every family's markers at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vllm_mlx.parsers.tools._json import RawCall
from vllm_mlx.parsers.tools.base import ToolParser
from vllm_mlx.parsers.tools.deepseek import DeepSeekToolParser
from vllm_mlx.parsers.tools.functionary import FunctionaryToolParser
from vllm_mlx.parsers.tools.glm47 import Glm47ToolParser
from vllm_mlx.parsers.tools.granite import GraniteToolParser
from vllm_mlx.parsers.tools.hermes import HermesToolParser
from vllm_mlx.parsers.tools.kimi import KimiToolParser
from vllm_mlx.parsers.tools.llama import LlamaToolParser
from vllm_mlx.parsers.tools.mistral import MistralToolParser
from vllm_mlx.parsers.tools.nemotron import NemotronToolParser
from vllm_mlx.parsers.tools.qwen import QwenToolParser
from vllm_mlx.parsers.tools.xlam import XlamToolParser

# Order matters where families share a marker: the first owner says where the region
# ends, then each owner in turn may parse it (e.g. <tool_call>: JSON, XML, GLM pairs).
_FAMILIES: tuple[type[ToolParser], ...] = (
    HermesToolParser,
    QwenToolParser,
    Glm47ToolParser,
    GraniteToolParser,
    NemotronToolParser,
    MistralToolParser,
    XlamToolParser,
    LlamaToolParser,
    DeepSeekToolParser,
    KimiToolParser,
    FunctionaryToolParser,
)
_LEADING = (LlamaToolParser, XlamToolParser)  # bare JSON / pythonic at the start


def _union(attr: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m for f in _FAMILIES for m in getattr(f, attr)))


class AutoToolParser(ToolParser):
    """Tries every family: any family's marker opens a region, parsed by the first
    family that accepts it; a bare reply is tried as Llama JSON/pythonic, then xLAM.

    Functionary's bare first recipient (``get_weather\\n{...}`` with no ``>>>``) is
    not detected: too easily confused with plain text.
    """

    name = "auto"
    markers = _union("markers")
    sections = _union("sections")
    closers = _union("closers")
    leading = True

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(tools)
        members = {cls: cls(tools) for cls in _FAMILIES}
        self._owners = {
            marker: [m for m in members.values() if marker in m.markers] for marker in self.markers
        }
        self._owners[""] = [members[cls] for cls in _LEADING]

    def region_end(self, marker: str, text: str, final: bool) -> int | None:
        for member in self._owners[marker]:
            member._memo = self._memo  # one scan state, owned (and cleared) by this engine
            end = member.region_end(marker, text, final)
            if marker or end != 0:
                return end
        return 0

    def parse_region(self, marker: str, region: str) -> list[RawCall] | None:
        for member in self._owners[marker]:
            calls = member.parse_region(marker, region)
            if calls is not None:
                return calls
        return None
