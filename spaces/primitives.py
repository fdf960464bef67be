"""Each layer and the SSDLite head as a list of primitive ops (conv, depthwise conv,
element-wise), with their exact shapes.

This is the one place that knows the inner structure of every layer kind in numbers:
cost counting sums it, and the modelled accelerator profiles price it op by op (regular
vs depthwise convolution, parameter bytes, element-wise dispatches). Builders (torch,
Keras) mirror the same structure; tests check their parameter counts against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tdbnas.spaces.arch import ArchSpec, LayerConfig
from tdbnas.spaces.channels import round_channels, same_output_size
from tdbnas.spaces.head import SSDLiteHead
from tdbnas.spaces.layers import (
    IBN,
    Conv,
    DepthwiseSeparable,
    FusedIBN,
    ShuffleBlock,
    Skip,
    Tucker,
    XceptionBlock,
)

CONV_OPS = ("conv", "dwconv")


@dataclass(frozen=True)
class Primitive:
    """One op. `conv` is a dense convolution, `dwconv` a depthwise one (cin == cout);
    `gap` (global average pool), `add`, `mul` (broadcast scale), `concat` and `split`
    (channel split, the ShuffleNet shuffle) move data but do no multiply-adds."""

    op: str
    name: str
    in_hw: tuple[int, int]
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    bias: bool = False
    bn: bool = False
    act: str | None = None

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.op == "gap":
            return (1, 1)
        return (same_output_size(self.in_hw[0], self.stride), same_output_size(self.in_hw[1], self.stride))

    @property
    def madds(self) -> int:
        """Multiply-accumulates of the convolution; 0 for data movement and element-wise ops."""
        oh, ow = self.out_hw
        if self.op == "conv":
            return oh * ow * self.kernel * self.kernel * self.cin * self.cout
        if self.op == "dwconv":
            return oh * ow * self.kernel * self.kernel * self.cin
        return 0

    @property
    def weights(self) -> int:
        if self.op == "conv":
            return self.kernel * self.kernel * self.cin * self.cout
        if self.op == "dwconv":
            return self.kernel * self.kernel * self.cin
        return 0

    @property
    def params(self) -> int:
        """Trainable parameters: weights, bias, and BN scale and offset (BN is folded at export)."""
        if self.op not in CONV_OPS:
            return 0
        return self.weights + (self.cout if self.bias else 0) + (2 * self.cout if self.bn else 0)


def _conv(name, hw, cin, cout, kernel=1, stride=1, act=None, bn=True, bias=False) -> Primitive:
    return Primitive("conv", name, hw, cin, cout, kernel, stride, bias=bias, bn=bn, act=act)


def _dw(name, hw, channels, kernel, stride=1, act=None) -> Primitive:
    return Primitive("dwconv", name, hw, channels, channels, kernel, stride, bn=True, act=act)


def _squeeze_excite(hw, channels, ratio, act) -> list[Primitive]:
    """TF `_squeeze_and_excite`: mean -> 1x1 conv+bias (act) -> 1x1 conv+bias (sigmoid) -> scale."""
    hidden = round_channels(channels, ratio)
    return [Primitive("gap", "se_pool", hw, channels, channels),
            _conv("se_reduce", (1, 1), channels, hidden, act=act, bn=False, bias=True),
            _conv("se_expand", (1, 1), hidden, channels, act="sigmoid", bn=False, bias=True),
            Primitive("mul", "se_scale", hw, channels, channels)]


def layer_primitives(config: LayerConfig) -> list[Primitive]:
    """The ops of one placed layer, in execution order."""
    layer, cin, hw = config.layer, config.in_channels, config.in_hw
    out_hw = config.out_hw
    ops: list[Primitive]
    if isinstance(layer, Skip):
        return []
    if isinstance(layer, Conv):
        return [_conv("conv", hw, cin, layer.out, layer.kernel, layer.stride, act=layer.act)]
    if isinstance(layer, (IBN, DepthwiseSeparable, FusedIBN)):
        hidden = layer.hidden(cin)
        if isinstance(layer, IBN):
            ops = [_conv("expand", hw, cin, hidden, act=layer.act),
                   _dw("depthwise", hw, hidden, layer.kernel, layer.stride, act=layer.act)]
        elif isinstance(layer, DepthwiseSeparable):
            ops = [_dw("depthwise", hw, cin, layer.kernel, layer.stride, act=layer.act)]
        else:
            ops = [_conv("expand", hw, cin, hidden, layer.kernel, layer.stride, act=layer.act)]
        if layer.se:
            ops += _squeeze_excite(out_hw, hidden, layer.se, layer.act)
        ops.append(_conv("project", out_hw, hidden, layer.out))
    elif isinstance(layer, Tucker):
        in_rank, out_rank = layer.ranks(cin)
        ops = [_conv("compress", hw, cin, in_rank, act=layer.act),
               _conv("core", hw, in_rank, out_rank, layer.kernel, layer.stride, act=layer.act),
               _conv("project", out_hw, out_rank, layer.out)]
    elif isinstance(layer, (ShuffleBlock, XceptionBlock)):
        ops = _split_block(layer, cin, hw, out_hw)
    else:
        raise TypeError(f"no primitive decomposition for {type(layer).__name__}")
    if config.residual:
        ops.append(Primitive("add", "residual", out_hw, layer.out, layer.out))
    return ops


def _split_block(layer: ShuffleBlock | XceptionBlock, cin: int, hw, out_hw) -> list[Primitive]:
    """DetNAS `ShuffleNetV2BlockSearched`: at stride 1 the main branch sees half the channels
    and the other half passes through; at stride 2 a dw+1x1 projection branch sees them all."""
    mid, act, k = layer.mid(), layer.act, layer.kernel
    ops: list[Primitive] = []
    if layer.stride == 1:
        branch_in, branch_out = cin // 2, layer.out // 2
        ops.append(Primitive("split", "shuffle", hw, cin, cin))
    else:
        branch_in, branch_out = cin, layer.out - cin
        ops += [_dw("proj_dw", hw, cin, k, layer.stride),
                _conv("proj_pw", out_hw, cin, cin, act=act)]
    if isinstance(layer, ShuffleBlock):
        ops += [_conv("pw1", hw, branch_in, mid, act=act),
                _dw("dw", hw, mid, k, layer.stride),
                _conv("pw2", out_hw, mid, branch_out, act=act)]
    else:
        ops += [_dw("dw1", hw, branch_in, k, layer.stride), _conv("pw1", out_hw, branch_in, mid, act=act),
                _dw("dw2", out_hw, mid, k), _conv("pw2", out_hw, mid, mid, act=act),
                _dw("dw3", out_hw, mid, k), _conv("pw3", out_hw, mid, branch_out, act=act)]
    ops.append(Primitive("concat", "concat", out_hw, layer.out, layer.out))
    return ops


def head_primitives(head: SSDLiteHead, arch: ArchSpec, resolution: int | Sequence[int],
                    width_multiplier: float = 1.0) -> list[Primitive]:
    """Extra feature layers, then per map the box and class predictors (SSDLite)."""
    maps = head.feature_maps(arch, resolution, width_multiplier)
    n_from = len(head.from_features)
    ops: list[Primitive] = []
    previous = maps[n_from - 1]
    for index, depth in enumerate(head.extra_depths, start=1):
        mid, out = head.extra_widths(depth, width_multiplier)
        ops += [_conv(f"extra{index}_1x1", previous.hw, previous.channels, mid, act="relu6"),
                _dw(f"extra{index}_dw", previous.hw, mid, 3, 2, act="relu6"),
                _conv(f"extra{index}_pw", maps[n_from + index - 1].hw, mid, out, act="relu6")]
        previous = maps[n_from + index - 1]
    for index, (fmap, anchors) in enumerate(zip(maps, head.anchors_per_location())):
        for what, width in (("box", 4), ("class", head.class_slots)):
            ops += [_dw(f"{what}{index}_dw", fmap.hw, fmap.channels, head.kernel, act="relu6"),
                    _conv(f"{what}{index}_pw", fmap.hw, fmap.channels, anchors * width, bn=False, bias=True)]
    return ops
