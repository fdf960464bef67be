"""Layer specs: one small frozen dataclass per layer kind, and their one-token string form.

A token is the kind followed by `_`-separated options in a fixed order (timm-like):

    kind  _k<kernel> [_s<stride>] [_e<expansion> | _i<in ratio>_o<out ratio>] _c<out>
          [_se<ratio>] [_<activation>]

    conv_k3_s2_c32          3x3 regular conv, stride 2, 32 channels (the stem)
    ir_k5_s2_e8_c72         inverted bottleneck (IBN): 1x1 expand x8 -> 5x5 depthwise -> 1x1 linear
    ir_k3_e4_c32_se0.25_hs  IBN with squeeze-excite and hard-swish (MobileDet-CPU)
    ds_k3_c16               IBN without expansion: 3x3 depthwise -> 1x1 linear
    er_k3_s2_e8_c16         fused IBN: 3x3 regular conv expand x8 -> 1x1 linear
    tk_k3_i0.25_o0.75_c16   Tucker: 1x1 to in*0.25 -> 3x3 regular to out*0.75 -> 1x1 linear
    sh_k5_s2_c64            DetNAS ShuffleNetV2 block (1x1 -> dw5x5 -> 1x1, channel split)
    xc_k3_c64               DetNAS Xception-style block (three dw3x3 + 1x1 units)
    skip                    the identity (a removed layer)

Defaults are omitted: stride 1, no squeeze-excite, the kind's default activation (ReLU6,
or ReLU for the ShuffleNet kinds). Activations: `r6` ReLU6, `hs` hard-swish
(`x * relu6(x + 3) / 6`, TF's `swish6`), `re` ReLU. Channel counts are multiples of 8 so a
string names exactly the widths that get built (TF rounds every width to a multiple of 8).

Parsing is strict: a token must already be in canonical form, because the string is a key
(run databases, evaluation caches, latency tables) and one network must have one key.
A non-canonical token is rejected with the canonical spelling in the message.

Layer specs describe, they do not build: torch modules live in `tdbnas.spaces.nn`, Keras
lowering in `tdbnas.export`, costs in `tdbnas.spaces.costs`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from tdbnas.spaces.channels import CHANNEL_BASE, round_channels

ACTIVATIONS = {"relu6": "r6", "hswish": "hs", "relu": "re"}
_ACT_FROM_TOKEN = {v: k for k, v in ACTIVATIONS.items()}

# Option key in a token -> dataclass field name, in canonical order.
_OPTION_FIELDS = {"k": "kernel", "s": "stride", "e": "expansion", "i": "in_ratio",
                  "o": "out_ratio", "c": "out", "se": "se"}
_FIELD_OPTIONS = {v: k for k, v in _OPTION_FIELDS.items()}
_INT_FIELDS = {"kernel", "stride", "expansion", "out"}
_PART = re.compile(r"^(?:(?P<key>se|[ksceio])(?P<value>\d+(?:\.\d+)?)|(?P<act>r6|hs|re))$")

MAX_KERNEL = 11
STRIDES = (1, 2)


def format_number(value: float) -> str:
    """Shortest text that parses back to exactly `value` (`4`, `0.25`)."""
    if float(value) == int(value):
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True, kw_only=True)
class Layer:
    """Base of every layer spec. Subclasses are the layer kinds."""

    kind: ClassVar[str]  # token prefix
    title: ClassVar[str]  # human name for tables
    default_act: ClassVar[str] = "relu6"
    residual_capable: ClassVar[bool] = False  # ends in a linear projection: may add a shortcut

    @property
    def is_skip(self) -> bool:
        return False

    @property
    def stride(self) -> int:  # overridden by a field in the kinds that have one
        return 1

    def token(self) -> str:
        """Canonical token."""
        return _encode(self, include_out=True, include_stride=True)

    def signature(self) -> str:
        """Token without the output width: the layer's identity apart from its channels."""
        return _encode(self, include_out=False, include_stride=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the kind plus every field, defaults included."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def __str__(self) -> str:
        return self.token()

    def __post_init__(self) -> None:
        self._check()

    # Validation shared by the kinds: each check applies when the kind has that field.
    def _check(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{self.kind}: {field.name} must be an integer, got {value!r}")
        kernel = getattr(self, "kernel", None)
        if kernel is not None and not (1 <= kernel <= MAX_KERNEL and kernel % 2 == 1):
            raise ValueError(f"{self.kind}: kernel must be odd and between 1 and {MAX_KERNEL}, got {kernel}")
        stride = getattr(self, "stride", 1)
        if stride not in STRIDES:
            raise ValueError(f"{self.kind}: stride must be one of {STRIDES}, got {stride}")
        out = getattr(self, "out", None)
        if out is not None and (out < CHANNEL_BASE or out % CHANNEL_BASE):
            raise ValueError(
                f"{self.kind}: output channels must be a positive multiple of {CHANNEL_BASE}, got {out}"
                f" (TF rounds widths to multiples of {CHANNEL_BASE}; write c{round_channels(max(out, 1))})")
        expansion = getattr(self, "expansion", None)
        if expansion is not None and expansion < 2:
            raise ValueError(f"{self.kind}: expansion must be at least 2, got {expansion} "
                             "(an IBN without expansion is the 'ds' kind)")
        for name in ("in_ratio", "out_ratio"):
            ratio = getattr(self, name, None)
            if ratio is not None and not (isinstance(ratio, (int, float)) and 0 < ratio <= 2):
                raise ValueError(f"{self.kind}: {name} must be in (0, 2], got {ratio!r}")
        se = getattr(self, "se", 0.0)
        if not (isinstance(se, (int, float)) and 0 <= se <= 1):
            raise ValueError(f"{self.kind}: squeeze-excite ratio must be in [0, 1], got {se!r}")
        act = getattr(self, "act", None)
        if act is not None and act not in ACTIVATIONS:
            raise ValueError(f"{self.kind}: activation must be one of {sorted(ACTIVATIONS)}, got {act!r}")


@dataclass(frozen=True, kw_only=True)
class Conv(Layer):
    """Regular k x k conv + BN + activation (the stem; also a 1x1 feature conv)."""

    kind: ClassVar[str] = "conv"
    title: ClassVar[str] = "Conv"
    kernel: int
    stride: int = 1
    out: int
    act: str = "relu6"


@dataclass(frozen=True, kw_only=True)
class _ExpandedBottleneck(Layer):
    """Fields and widths shared by the IBN and the fused IBN (they differ in how they expand)."""

    residual_capable: ClassVar[bool] = True
    kernel: int
    stride: int = 1
    expansion: int
    out: int
    se: float = 0.0
    act: str = "relu6"

    def hidden(self, in_channels: int) -> int:
        """Expanded width: `in * expansion`, unrounded, as in TF."""
        return in_channels * self.expansion


@dataclass(frozen=True, kw_only=True)
class IBN(_ExpandedBottleneck):
    """Inverted bottleneck: 1x1 expand (act) -> k x k depthwise (act) -> [SE] -> 1x1 linear."""

    kind: ClassVar[str] = "ir"
    title: ClassVar[str] = "IBN"


@dataclass(frozen=True, kw_only=True)
class FusedIBN(_ExpandedBottleneck):
    """Fused IBN: k x k regular conv expand (act) -> [SE] -> 1x1 linear."""

    kind: ClassVar[str] = "er"
    title: ClassVar[str] = "Fused IBN"


@dataclass(frozen=True, kw_only=True)
class DepthwiseSeparable(Layer):
    """IBN without expansion: k x k depthwise (act) -> [SE] -> 1x1 linear."""

    kind: ClassVar[str] = "ds"
    title: ClassVar[str] = "IBN (no expansion)"
    residual_capable: ClassVar[bool] = True
    kernel: int
    stride: int = 1
    out: int
    se: float = 0.0
    act: str = "relu6"

    def hidden(self, in_channels: int) -> int:
        return in_channels


@dataclass(frozen=True, kw_only=True)
class Tucker(Layer):
    """Tucker (generalised bottleneck): 1x1 to round8(in*i) (act) -> k x k regular conv to
    round8(out*o) (act) -> 1x1 linear."""

    kind: ClassVar[str] = "tk"
    title: ClassVar[str] = "Tucker"
    residual_capable: ClassVar[bool] = True
    kernel: int
    stride: int = 1
    in_ratio: float
    out_ratio: float
    out: int
    act: str = "relu6"

    def ranks(self, in_channels: int) -> tuple[int, int]:
        """(input rank, output rank), rounded as TF's `_tucker_conv` does."""
        return round_channels(in_channels, self.in_ratio), round_channels(self.out, self.out_ratio)


@dataclass(frozen=True, kw_only=True)
class _ChannelSplitBlock(Layer):
    """Fields shared by the DetNAS choices, which run in the ShuffleNetV2 frame: at stride 1 the
    block transforms half of the channels and passes the other half through; at stride 2 a
    dw k x k -> 1x1 projection branch sits beside the main branch."""

    default_act: ClassVar[str] = "relu"
    kernel: int
    stride: int = 1
    out: int
    act: str = "relu"

    def __post_init__(self) -> None:
        self._check()
        if self.kernel < 3:
            raise ValueError(f"{self.kind}: kernel must be at least 3, got {self.kernel}")

    def mid(self) -> int:
        """Bottleneck width: half the block's output width, as in DetNAS."""
        return self.out // 2


@dataclass(frozen=True, kw_only=True)
class ShuffleBlock(_ChannelSplitBlock):
    """DetNAS ShuffleNetV2 choice: 1x1 -> dw k x k -> 1x1."""

    kind: ClassVar[str] = "sh"
    title: ClassVar[str] = "ShuffleNetV2"


@dataclass(frozen=True, kw_only=True)
class XceptionBlock(_ChannelSplitBlock):
    """DetNAS Xception-style choice: three (dw k x k -> 1x1) units."""

    kind: ClassVar[str] = "xc"
    title: ClassVar[str] = "Xception"


@dataclass(frozen=True, kw_only=True)
class Skip(Layer):
    """The identity: a searchable slot that was switched off."""

    kind: ClassVar[str] = "skip"
    title: ClassVar[str] = "Skip"

    @property
    def is_skip(self) -> bool:
        return True


LAYER_KINDS: dict[str, type[Layer]] = {cls.kind: cls for cls in (
    Conv, IBN, DepthwiseSeparable, FusedIBN, Tucker, ShuffleBlock, XceptionBlock, Skip)}
SPLIT_KINDS = (_ChannelSplitBlock,)


def split_channels_error(title: str, stride: int, in_channels: int, out_channels: int) -> str | None:
    """Why a ShuffleNet/Xception block cannot map `in_channels` to `out_channels`, or None.

    At stride 1 the block splits its input in half and keeps one half, so in == out; at
    stride 2 it concatenates a projection of all its input, so out > in.
    """
    if stride == 1 and in_channels != out_channels:
        return (f"a stride-1 {title} block splits its input in half, so it needs in == out channels, "
                f"got {in_channels} -> {out_channels}")
    if stride == 2 and out_channels <= in_channels:
        return (f"a stride-2 {title} block concatenates a projection of its {in_channels} input channels, "
                f"so it needs more output channels, got {out_channels}")
    return None


def _encode(layer: Layer, *, include_out: bool, include_stride: bool) -> str:
    parts = [layer.kind]
    for field in dataclasses.fields(layer):
        name, value = field.name, getattr(layer, field.name)
        if name == "act":
            continue
        if name == "out" and not include_out:
            continue
        if name == "stride" and (value == 1 or not include_stride):
            continue
        if name == "se" and not value:
            continue
        parts.append(_FIELD_OPTIONS[name] + format_number(value))
    act = getattr(layer, "act", None)
    if act is not None and act != layer.default_act:
        parts.append(ACTIVATIONS[act])
    return "_".join(parts)


def _parse_options(token: str) -> tuple[type[Layer], dict[str, Any]]:
    """Split a token into its kind and option values; no canonical-form check yet."""
    if not token:
        raise ValueError("empty layer token")
    kind, *parts = token.split("_")
    cls = LAYER_KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown layer kind {kind!r} in {token!r}; known kinds: {', '.join(LAYER_KINDS)}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for part in parts:
        match = _PART.match(part)
        if match is None:
            raise ValueError(f"malformed option {part!r} in {token!r}")
        if match["act"]:
            name, value = "act", _ACT_FROM_TOKEN[match["act"]]
        else:
            name, text = _OPTION_FIELDS[match["key"]], match["value"]
            if name in _INT_FIELDS:
                if "." in text:
                    raise ValueError(f"option {part!r} in {token!r} must be an integer")
                value = int(text)
            else:
                value = float(text)
        if name not in allowed:
            raise ValueError(f"option {part!r} does not apply to {cls.title} ({kind!r}) in {token!r}")
        if name in values:
            raise ValueError(f"option {part!r} given twice in {token!r}")
        values[name] = value
    return cls, values


def _required(cls: type[Layer]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def parse_layer(token: str) -> Layer:
    """Parse one canonical layer token; raise ValueError saying what is wrong otherwise."""
    cls, values = _parse_options(token)
    missing = [_FIELD_OPTIONS[name] for name in _required(cls) if name not in values]
    if missing:
        raise ValueError(f"{token!r} lacks required option(s) {', '.join(missing)} for {cls.title}")
    layer = cls(**values)
    canonical = layer.token()
    if canonical != token:
        raise ValueError(f"{token!r} is not in canonical form; write {canonical!r}")
    return layer


def layer_from_dict(data: dict[str, Any]) -> Layer:
    """Inverse of `Layer.to_dict`; unknown or missing fields are errors."""
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"a layer must be an object with a 'kind', got {data!r}")
    fields = dict(data)
    kind = fields.pop("kind")
    cls = LAYER_KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown layer kind {kind!r}; known kinds: {', '.join(LAYER_KINDS)}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for layer kind {kind!r}; allowed: {sorted(allowed)}")
    missing = [name for name in _required(cls) if name not in fields]
    if missing:
        raise ValueError(f"layer kind {kind!r} needs field(s) {missing}")
    try:
        return cls(**fields)
    except TypeError as exc:  # e.g. a wrong type reached a comparison
        raise ValueError(f"bad layer {data!r}: {exc}") from None


@dataclass(frozen=True)
class LayerTemplate:
    """A layer choice of a search space: a token without output width and stride
    (`ir_k3_e4`, `tk_k3_i0.25_o0.75`, `skip`), completed by the block it is placed in."""

    cls: type[Layer]
    options: tuple[tuple[str, Any], ...]

    @classmethod
    def parse(cls, token: str) -> LayerTemplate:
        kind_cls, values = _parse_options(token)
        for name in ("out", "stride"):
            if name in values:
                raise ValueError(f"layer choice {token!r} must not set {_FIELD_OPTIONS[name]!r}: "
                                 "the block sets the width and the stride")
        missing = [_FIELD_OPTIONS[n] for n in _required(kind_cls) if n not in values and n != "out"]
        if missing:
            raise ValueError(f"layer choice {token!r} lacks option(s) {', '.join(missing)}")
        template = cls(kind_cls, tuple(sorted(values.items())))
        canonical = template.token  # building it validates the option values
        if canonical != token:
            raise ValueError(f"layer choice {token!r} is not in canonical form; write {canonical!r}")
        return template

    @property
    def is_skip(self) -> bool:
        return self.cls is Skip

    @property
    def token(self) -> str:
        return _encode(self.build(out=CHANNEL_BASE, stride=1), include_out=False, include_stride=False)

    def build(self, *, out: int, stride: int) -> Layer:
        if self.cls is Skip:
            return Skip()
        values = dict(self.options)
        values["out"] = out
        if stride != 1:
            values["stride"] = stride
        return self.cls(**values)

    def matches(self, layer: Layer) -> bool:
        """Whether `layer` is this choice, whatever its width and stride."""
        if type(layer) is not self.cls:
            return False
        return layer.is_skip or self.build(out=layer.out, stride=layer.stride) == layer  # type: ignore[attr-defined]

    def __str__(self) -> str:
        return self.token
