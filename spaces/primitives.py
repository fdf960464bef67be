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
from tdbnas.spaces.pyramid_layout import (
    PyramidCell,
    PyramidDownConv,
    PyramidLateral,
    PyramidPart,
    PyramidResample,
    pyramid_layout,
)

CONV_OPS = ("conv", "dwconv")


@dataclass(frozen=True)
class Primitive:
    """One op. `conv` is a dense convolution, `dwconv` a depthwise one (cin == cout);
    `gap` (global average pool), `add`, `mul` (broadcast scale), `concat` and `split`
    (channel split, the ShuffleNet shuffle) move data but do no multiply-adds; so do the
    pyramid's `maxpool` (2x2 stride 2), `resize` (nearest, to `out_size`), `gmax` (global max
    pool), `logistic` and a standalone `relu`."""

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
    out_size: tuple[int, int] | None = None  # a resize's target size

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.out_size is not None:
            return self.out_size
        if self.op in ("gap", "gmax"):
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


def pyramid_part_primitives(part: PyramidPart) -> list[Primitive]:
    """The ops of one pyramid part (`tdbnas.spaces.pyramid_layout`), in execution order. The ReLU
    after a cell's merge is fused into its last add (TFLite fuses it into ADD); the separable
    conv has no BN between depthwise and pointwise (TF `separable_conv2d`)."""
    if isinstance(part, PyramidLateral):
        return [_conv("lateral", part.in_hw, part.in_channels, part.out_channels)]
    if isinstance(part, PyramidResample):
        if part.levels < 0:
            return [Primitive("resize", "upsample", part.in_hw, part.channels, part.channels, out_size=part.out_hw)]
        ops, hw = [], part.in_hw
        for step in range(part.levels):
            ops.append(Primitive("maxpool", f"pool{step}", hw, part.channels, part.channels, 2, 2))
            hw = ops[-1].out_hw
        return ops
    if isinstance(part, PyramidDownConv):
        return [Primitive("relu", "relu", part.in_hw, part.channels, part.channels),
                *_pyramid_conv(part.in_hw, part.channels, 2, part.separable)]
    if isinstance(part, PyramidCell):
        hw, c = part.hw, part.channels
        ops = [] if part.op == "sum" else [Primitive("gmax", "gate_max", hw, c, c),
                                           Primitive("logistic", "gate", (1, 1), c, c),
                                           Primitive("mul", "gate_scale", hw, c, c)]
        ops += [Primitive("add", f"add{index}", hw, c, c) for index in range(1 + part.absorbed)]
        ops[-1] = Primitive("add", ops[-1].name, hw, c, c, act="relu")
        return ops + _pyramid_conv(hw, c, 1, part.separable)
    raise TypeError(f"not a pyramid part: {part!r}")


def _pyramid_conv(hw, channels, stride, separable) -> list[Primitive]:
    if not separable:
        return [_conv("conv", hw, channels, channels, 3, stride)]
    depthwise = Primitive("dwconv", "depthwise", hw, channels, channels, 3, stride)
    return [depthwise, _conv("pointwise", depthwise.out_hw, channels, channels)]


def pyramid_primitives(arch: ArchSpec, resolution: int | Sequence[int], width_multiplier: float = 1.0
                       ) -> list[Primitive]:
    """Every op of `arch`'s pyramid (none without one)."""
    if arch.pyramid is None:
        return []
    return [op for part in pyramid_layout(arch, resolution, width_multiplier).parts()
            for op in pyramid_part_primitives(part)]


def head_primitives(head: SSDLiteHead, arch: ArchSpec, resolution: int | Sequence[int],
                    width_multiplier: float = 1.0, *, depthwise: bool = True, box_kernel: int | None = None
                    ) -> list[Primitive]:
    """Extra feature layers, then per map the box and class predictors: SSDLite by default.

    `depthwise=False` is the TF Object Detection API SSD (non-Lite) head on the same maps and
    anchors (`use_depthwise: false`; `kernel_size: 1` in the ssd_mobilenet_v{1,2}_quantized_300x300
    configs, `box_kernel`): extra layers `1x1 conv to depth/2 -> 3x3 stride-2 regular conv to
    depth`, regular-conv predictors. tdbnas builds and trains SSDLite heads only; the SSD head is
    here for costing and latency models."""
    head = head.resolve(arch)
    maps = head.feature_maps(arch, resolution, width_multiplier)
    kernel = head.kernel if box_kernel is None else box_kernel
    n_from = len(head.from_features)
    ops: list[Primitive] = []
    previous = maps[n_from - 1]
    for index, depth in enumerate(head.extra_depths, start=1):
        mid, out = head.extra_widths(depth, width_multiplier)
        ops.append(_conv(f"extra{index}_1x1", previous.hw, previous.channels, mid, act="relu6"))
        if depthwise:
            ops += [_dw(f"extra{index}_dw", previous.hw, mid, 3, 2, act="relu6"),
                    _conv(f"extra{index}_pw", maps[n_from + index - 1].hw, mid, out, act="relu6")]
        else:
            ops.append(_conv(f"extra{index}_conv", previous.hw, mid, out, 3, 2, act="relu6"))
        previous = maps[n_from + index - 1]
    for index, (fmap, anchors) in enumerate(zip(maps, head.anchors_per_location())):
        for what, width in (("box", 4), ("class", head.class_slots)):
            if depthwise:
                ops += [_dw(f"{what}{index}_dw", fmap.hw, fmap.channels, kernel, act="relu6"),
                        _conv(f"{what}{index}_pw", fmap.hw, fmap.channels, anchors * width, bn=False, bias=True)]
            else:
                ops.append(_conv(f"{what}{index}", fmap.hw, fmap.channels, anchors * width, kernel, bn=False,
                                 bias=True))
    return ops


def classifier_primitives(channels: int, hw: tuple[int, int], classes: int) -> list[Primitive]:
    """Global average pool, then the logits as a 1x1 conv with bias (the ImageNet classifiers'
    head: 1001 classes in the TF-slim and TPU model zoos)."""
    return [Primitive("gap", "pool", hw, channels, channels),
            _conv("logits", (1, 1), channels, classes, bn=False, bias=True)]
