"""The architecture: a frozen backbone spec with one canonical line of text.

A backbone is a sequence of blocks, each a sequence of layers. In the string, layers are
separated by `,` and blocks by `/` (no spaces, so the string is shell-safe):

    conv_k3_s2_c32/tk_k3_i0.25_o0.75_c16/er_k3_s2_e8_c16,er_k3_e4_c16,skip,skip/...

Rules, checked on construction:
  * only the first layer of a block may stride (it carries the block's stride);
  * the very first layer cannot be `skip` (it must produce channels from the image);
  * ShuffleNet/Xception blocks at stride 1 split channels in half, so in == out there.

Derived, never written: the residual shortcut (stride 1, in == out, the layer ends in a
linear projection, and it is not the first layer of its block; the first-layer rule is the
TF MobileDet implementation's, which passes `residual=False` to every block's first layer,
e.g. MobileDet-CPU layer 11, 72 -> 72); the feature endpoints `C<k>` (the output of the last
layer at cumulative stride 2**k, so C4 is at stride 16 and C5 at stride 32); all channel
widths under a width multiplier (TF rounding, see `channels.round_channels`).

Resolution, width multiplier, class count and device are not part of the string: they are
build-time arguments (`trace(resolution, width_multiplier)`).

An optional feature pyramid (NAS-FPN merging cells, `tdbnas.spaces.pyramid`) follows the
backbone after a `+`; a string without one is a backbone-only SSDLite, exactly as before:

    conv_k3_s2_c32/.../ir_k3_e8_c384+fpn_p3-7_c64_dw,p6_sum_3_4,p7_sum_4_5,p5_sum_2_5,...
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tdbnas.spaces.channels import as_hw, round_channels, same_output_size
from tdbnas.spaces.layers import SPLIT_KINDS, Layer, layer_from_dict, parse_layer, split_channels_error
from tdbnas.spaces.pyramid import PyramidSpec, PyramidStringError

BLOCK_SEPARATOR = "/"
LAYER_SEPARATOR = ","
PYRAMID_SEPARATOR = "+"
JSON_FORMAT = "tdbnas.arch"
JSON_VERSION = 1


class ArchStringError(ValueError):
    """A malformed architecture string; the message names the token and where it is."""

    def __init__(self, message: str, token: str | None = None, position: int | None = None):
        super().__init__(message)
        self.token = token
        self.position = position


@dataclass(frozen=True)
class LayerConfig:
    """A layer placed in a network at a resolution: what builders build and latency tables key.

    `layer.out` is the built output width (after any width multiplier).
    """

    layer: Layer
    in_channels: int
    in_hw: tuple[int, int]
    residual: bool

    @property
    def out_channels(self) -> int:
        return self.in_channels if self.layer.is_skip else self.layer.out  # type: ignore[attr-defined]

    @property
    def stride(self) -> int:
        return self.layer.stride

    @property
    def out_hw(self) -> tuple[int, int]:
        return (same_output_size(self.in_hw[0], self.stride), same_output_size(self.in_hw[1], self.stride))

    @property
    def key(self) -> str:
        """Latency-table key: signature, input size, channels, shortcut.

        `ir_k3_s2_e8@40x40:40>72`, `ir_k3_e8@20x20:72>72+res`.
        """
        shortcut = "+res" if self.residual else ""
        return (f"{self.layer.signature()}@{self.in_hw[0]}x{self.in_hw[1]}:"
                f"{self.in_channels}>{self.out_channels}{shortcut}")


@dataclass(frozen=True)
class FeatureInfo:
    """A feature endpoint published by a backbone: no forward pass needed to know it."""

    name: str  # "C4"
    channels: int
    stride: int
    layer_index: int  # position in the flat layer list (and in `trace`)


class _StructureError(ValueError):
    def __init__(self, block: int, layer: int, reason: str):
        super().__init__(reason)
        self.block, self.layer, self.reason = block, layer, reason


@dataclass(frozen=True)
class ArchSpec:
    """A backbone (blocks of layers) and optionally a feature pyramid on it. Build one with
    `ArchSpec.parse(text)` or from layers (and a `PyramidSpec`)."""

    blocks: tuple[tuple[Layer, ...], ...]
    pyramid: PyramidSpec | None = None

    def __post_init__(self) -> None:
        blocks = tuple(tuple(block) for block in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        try:
            _check_structure(blocks)
        except _StructureError as exc:
            token = _token_or_repr(blocks, exc.block, exc.layer)
            raise ValueError(f"{token} (block {exc.block}, layer {exc.layer + 1} of "
                             f"{len(blocks[exc.block]) if exc.block < len(blocks) else 0}): {exc.reason}") from None
        if self.pyramid is not None:
            if not isinstance(self.pyramid, PyramidSpec):
                raise ValueError(f"pyramid must be a PyramidSpec, got {type(self.pyramid).__name__}")
            reason = _pyramid_error(self)
            if reason:
                raise ValueError(f"pyramid {self.pyramid.header()!r}: {reason}")

    # ---- text form -------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> ArchSpec:
        """Parse a canonical architecture string; raise `ArchStringError` naming the bad token."""
        if not isinstance(text, str):
            raise ArchStringError(f"an architecture string must be a str, got {type(text).__name__}")
        if not text:
            raise ArchStringError("empty architecture string")
        for position, char in enumerate(text):
            if char.isspace():
                raise ArchStringError(f"whitespace at character {position} of the architecture string; "
                                      f"layers are separated by {LAYER_SEPARATOR!r} and blocks by "
                                      f"{BLOCK_SEPARATOR!r} with no spaces", position=position)
        backbone_text, plus, pyramid_text = text.partition(PYRAMID_SEPARATOR)
        blocks = cls._parse_backbone(backbone_text)
        if not plus:
            return cls(blocks)
        start = len(backbone_text) + 1
        if PYRAMID_SEPARATOR in pyramid_text:
            position = start + pyramid_text.index(PYRAMID_SEPARATOR)
            raise ArchStringError(f"a second {PYRAMID_SEPARATOR!r} at character {position}: an architecture has "
                                  "one backbone and at most one pyramid", PYRAMID_SEPARATOR, position)
        if not pyramid_text:
            raise ArchStringError(f"empty pyramid section after {PYRAMID_SEPARATOR!r} at character {start - 1}",
                                  "", start)
        try:
            pyramid = PyramidSpec.parse(pyramid_text)
        except PyramidStringError as exc:
            tokens = pyramid_text.split(",")
            index = exc.index or 0
            position = start + sum(len(t) + 1 for t in tokens[:index])
            raise ArchStringError(f"{exc} (character {position})", exc.token, position) from None
        try:
            return cls(blocks, pyramid)
        except ValueError as exc:
            raise ArchStringError(f"pyramid header {pyramid.header()!r} at character {start}: "
                                  f"{str(exc).split(': ', 1)[-1]}", pyramid.header(), start) from None

    @staticmethod
    def _parse_backbone(text: str) -> tuple[tuple[Layer, ...], ...]:
        blocks: list[list[Layer]] = []
        positions: list[list[int]] = []
        offset = 0
        for b, block_text in enumerate(text.split(BLOCK_SEPARATOR)):
            layers, starts = [], []
            for i, token in enumerate(block_text.split(LAYER_SEPARATOR)):
                where = f"block {b}, layer {i + 1}, character {offset}"
                if not token:
                    raise ArchStringError(f"empty token at {where} (doubled or trailing separator?)",
                                          token, offset)
                try:
                    layers.append(parse_layer(token))
                except ValueError as exc:
                    raise ArchStringError(f"bad token {token!r} at {where}: {exc}", token, offset) from None
                starts.append(offset)
                offset += len(token) + 1
            blocks.append(layers)
            positions.append(starts)
        frozen = tuple(tuple(block) for block in blocks)
        try:
            _check_structure(frozen)
        except _StructureError as exc:
            token = frozen[exc.block][exc.layer].token()
            position = positions[exc.block][exc.layer]
            raise ArchStringError(f"token {token!r} at block {exc.block}, layer {exc.layer + 1}, "
                                  f"character {position}: {exc.reason}", token, position) from None
        return frozen

    def encode(self) -> str:
        backbone = BLOCK_SEPARATOR.join(LAYER_SEPARATOR.join(layer.token() for layer in block)
                                        for block in self.blocks)
        return backbone if self.pyramid is None else f"{backbone}{PYRAMID_SEPARATOR}{self.pyramid.encode()}"

    def backbone_only(self) -> ArchSpec:
        """The same backbone without a pyramid."""
        return self if self.pyramid is None else ArchSpec(self.blocks)

    def with_pyramid(self, pyramid: PyramidSpec | None) -> ArchSpec:
        return ArchSpec(self.blocks, pyramid)

    def __str__(self) -> str:
        return self.encode()

    # ---- JSON form -------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        data = {"format": JSON_FORMAT, "version": JSON_VERSION, "arch": self.encode(),
                "blocks": [[layer.to_dict() for layer in block] for block in self.blocks]}
        if self.pyramid is not None:
            data["pyramid"] = self.pyramid.encode()
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_json_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: str | dict[str, Any]) -> ArchSpec:
        """Inverse of `to_json` / `to_json_dict`. The `arch` string, when present, must agree."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ValueError(f"architecture JSON is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("architecture JSON must be an object")
        if data.get("format") != JSON_FORMAT or data.get("version") != JSON_VERSION:
            raise ValueError(f"not a {JSON_FORMAT} v{JSON_VERSION} document "
                             f"(format={data.get('format')!r}, version={data.get('version')!r})")
        unknown = sorted(set(data) - {"format", "version", "arch", "blocks", "pyramid"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in architecture JSON")
        raw_blocks = data.get("blocks")
        if raw_blocks is None:
            if "arch" not in data:
                raise ValueError("architecture JSON needs 'blocks' or 'arch'")
            return cls.parse(data["arch"])
        if not isinstance(raw_blocks, list) or not all(isinstance(b, list) for b in raw_blocks):
            raise ValueError("'blocks' must be a list of lists of layers")
        blocks = []
        for b, raw_block in enumerate(raw_blocks):
            layers = []
            for i, raw in enumerate(raw_block):
                try:
                    layers.append(layer_from_dict(raw))
                except ValueError as exc:
                    raise ValueError(f"blocks[{b}][{i}]: {exc}") from None
            blocks.append(tuple(layers))
        pyramid = data.get("pyramid")
        if pyramid is not None and not isinstance(pyramid, str):
            raise ValueError("'pyramid' must be the pyramid section of an architecture string")
        spec = cls(tuple(blocks), None if pyramid is None else PyramidSpec.parse(pyramid))
        if "arch" in data and data["arch"] != spec.encode():
            raise ValueError(f"'arch' {data['arch']!r} disagrees with 'blocks' ({spec.encode()!r})")
        return spec

    # ---- structure -------------------------------------------------------------------
    def layers(self) -> Iterator[tuple[int, int, Layer]]:
        """(block index, index in block, layer) for every layer, in order."""
        for b, block in enumerate(self.blocks):
            for i, layer in enumerate(block):
                yield b, i, layer

    @property
    def num_layers(self) -> int:
        return sum(len(block) for block in self.blocks)

    def trace(self, resolution: int | Sequence[int], width_multiplier: float = 1.0,
              in_channels: int = 3) -> tuple[LayerConfig, ...]:
        """Every layer with its input channels, input size and derived shortcut."""
        hw = as_hw(resolution)
        channels = in_channels
        configs = []
        for _, i, layer in self.layers():
            if not layer.is_skip and width_multiplier != 1.0:
                layer = replace(layer, out=round_channels(layer.out, width_multiplier))  # type: ignore[call-arg]
            out = channels if layer.is_skip else layer.out  # type: ignore[attr-defined]
            residual = layer.residual_capable and i > 0 and layer.stride == 1 and out == channels
            configs.append(LayerConfig(layer, channels, hw, residual))
            channels = out
            hw = configs[-1].out_hw
        return tuple(configs)

    def features(self, width_multiplier: float = 1.0) -> tuple[FeatureInfo, ...]:
        """Endpoints C1, C2, ...: the last layer at each cumulative stride 2, 4, 8, ..."""
        # Channels do not depend on resolution; a 1x1 trace is enough.
        configs = self.trace(1, width_multiplier)
        stride, last = 1, {}
        for index, config in enumerate(configs):
            stride *= config.stride
            last[stride] = FeatureInfo(f"C{stride.bit_length() - 1}", config.out_channels, stride, index)
        return tuple(info for s, info in sorted(last.items()) if s > 1)

    def pyramid_inputs(self, width_multiplier: float = 1.0) -> tuple[FeatureInfo, ...]:
        """The backbone endpoints the pyramid reads (C<min>.. up to the deepest one), in level order."""
        if self.pyramid is None:
            return ()
        features = {info.name: info for info in self.features(width_multiplier)}
        deepest = max(int(name[1:]) for name in features)
        return tuple(features[f"C{level}"] for level in self.pyramid.input_levels(deepest))

    def feature(self, name: str, width_multiplier: float = 1.0) -> FeatureInfo:
        for info in self.features(width_multiplier):
            if info.name == name:
                return info
        have = ", ".join(f"{f.name} (stride {f.stride})" for f in self.features(width_multiplier))
        raise ValueError(f"this backbone has no endpoint {name}; it has {have}")


def _pyramid_error(arch: ArchSpec) -> str | None:
    """Why `arch`'s backbone cannot feed its pyramid, or None."""
    levels = {int(info.name[1:]) for info in arch.features()}
    pyramid = arch.pyramid
    if pyramid is not None and pyramid.min_level not in levels:
        have = ", ".join(f"C{level}" for level in sorted(levels))
        return (f"the pyramid starts at P{pyramid.min_level}, which needs backbone endpoint C{pyramid.min_level} "
                f"(stride {2 ** pyramid.min_level}); this backbone has {have}")
    return None


def _token_or_repr(blocks: tuple[tuple[Layer, ...], ...], b: int, i: int) -> str:
    try:
        return repr(blocks[b][i].token())
    except (IndexError, AttributeError):
        return f"block {b}"


def _check_structure(blocks: tuple[tuple[Layer, ...], ...]) -> None:
    if not blocks:
        raise _StructureError(0, 0, "an architecture needs at least one block")
    channels = 3
    for b, block in enumerate(blocks):
        if not block:
            raise _StructureError(b, 0, "empty block")
        for i, layer in enumerate(block):
            if not isinstance(layer, Layer):
                raise _StructureError(b, i, f"not a layer spec: {layer!r}")
            if i > 0 and layer.stride != 1:
                raise _StructureError(b, i, "only the first layer of a block may have a stride; "
                                            "start a new block here")
            if layer.is_skip:
                if b == 0 and i == 0:
                    raise _StructureError(b, i, "the first layer cannot be skip")
                continue
            if isinstance(layer, SPLIT_KINDS):
                reason = split_channels_error(layer.title, layer.stride, channels, layer.out)
                if reason:
                    raise _StructureError(b, i, reason)
            channels = layer.out  # type: ignore[attr-defined]


__all__ = ["ArchSpec", "ArchStringError", "FeatureInfo", "LayerConfig"]
