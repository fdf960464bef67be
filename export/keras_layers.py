"""Keras lowering of the parts of a detector: one placed backbone layer, one SSDLite extra
layer, one predictor. Each function applies Keras layers to a tensor and returns a tensor.

These functions are the single source of the Keras graph: `keras_detector` builds whole
networks from them and the latency profiler builds its per-op micro-models from them, so an
op timed alone is lowered exactly as inside the exported model.

They mirror the torch modules (`tdbnas.spaces.nn.blocks`, `tdbnas.detection.model`) and take
inner widths from the same spec helpers (`hidden`, `ranks`, `mid`), with these choices:
  * NHWC and TF's native 'SAME' padding (the torch side emulates it, see `Conv2dSame`);
  * conv without bias -> `BatchNormalization` with the torch epsilon, which the TFLite
    converter folds into the conv;
  * ReLU6 as `ReLU(max_value=6)` (fused into the conv), hard-swish as Keras `hard_silu`
    (`x * relu6(x + 3) / 6`, mapped to TFLite HARD_SWISH);
  * Keras layer names are torch module paths with `.` -> `_`
    (`backbone.blocks.3.1.expand.conv` -> `backbone_blocks_3_1_expand_conv`), which is how
    `tdbnas.export.weights.transfer_weights` pairs parameters.
"""

from __future__ import annotations

import keras

from tdbnas.spaces.arch import LayerConfig
from tdbnas.spaces.channels import round_channels
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

# Batch-norm epsilons of the torch model; tests check them against `DEFAULT_NORM` and
# `HEAD_NORM` (imported from torch modules, which this module must not import).
BACKBONE_BN_EPS = 0.01  # tdbnas.spaces.nn.ops.DEFAULT_NORM.eps
HEAD_BN_EPS = 0.001  # tdbnas.detection.model.HEAD_NORM.eps


def keras_name(torch_name: str) -> str:
    """The Keras layer name of a torch module path: `.` -> `_` (Keras names cannot hold dots
    everywhere they travel, e.g. SavedModel and TFLite tensor names)."""
    return torch_name.replace(".", "_")


def require_tensorflow_backend() -> None:
    """TFLite conversion needs Keras on its TensorFlow backend; fail early and say so."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(f"the Keras lowering needs the TensorFlow backend, but Keras runs on {backend!r}; "
                           "unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow before importing keras")


# ---- shared pieces ------------------------------------------------------------------------
def activation(x, act: str | None, *, name: str):
    """`None` (linear), `relu6`, `relu` or `hswish`, as a named Keras layer."""
    if act is None:
        return x
    if act == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=name)(x)
    if act == "relu":
        return keras.layers.ReLU(name=name)(x)
    if act == "hswish":
        return keras.layers.Activation("hard_silu", name=name)(x)
    raise ValueError(f"unknown activation {act!r}; expected None, 'relu6', 'relu' or 'hswish'")


def conv_bn_act(x, out: int, kernel: int = 1, stride: int = 1, *, depthwise: bool = False,
                act: str | None = "relu6", eps: float, name: str):
    """Torch `ConvBNAct` at `name`: conv (no bias, 'SAME') -> BN -> activation.

    With `depthwise` the conv is a `DepthwiseConv2D` (multiplier 1) and `out` must equal the
    input width."""
    name = keras_name(name)
    if depthwise:
        if out != x.shape[-1]:
            raise ValueError(f"{name}: a depthwise conv keeps its {x.shape[-1]} channels, asked for {out}")
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                         name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(out, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=eps, name=f"{name}_bn")(x)
    return activation(x, act, name=f"{name}_act")


def squeeze_excite(x, hidden: int, act: str, *, name: str):
    """Torch `SqueezeExcite` at `name`: global mean -> 1x1 conv + bias -> act -> 1x1 conv +
    bias -> sigmoid -> scale the input."""
    name = keras_name(name)
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)  # [N, 1, 1, C]
    s = keras.layers.Conv2D(hidden, 1, use_bias=True, name=f"{name}_reduce")(s)
    s = activation(s, act, name=f"{name}_act")
    s = keras.layers.Conv2D(channels, 1, use_bias=True, name=f"{name}_expand")(s)
    s = keras.layers.Activation("sigmoid", name=f"{name}_gate")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


class EvenOddChannels(keras.layers.Layer):
    """(x[..., 0::2], x[..., 1::2]): torch's `x[:, 0::2]`, `x[:, 1::2]` in NHWC (ShuffleNetV2's
    shuffle + split). Lowers to two TFLite STRIDED_SLICE ops."""

    def call(self, x):
        return x[..., 0::2], x[..., 1::2]

    def compute_output_shape(self, input_shape):
        *lead, channels = input_shape
        half = None if channels is None else channels // 2
        return (*lead, half), (*lead, half)


# ---- one placed backbone layer ------------------------------------------------------------
def apply_layer(x, config: LayerConfig, *, name: str, eps: float = BACKBONE_BN_EPS):
    """Apply one placed backbone layer (any kind of `tdbnas.spaces.nn.blocks.BLOCKS`, or skip)
    to `x` [N, H, W, config.in_channels]; `name` is its torch module path
    (`backbone.blocks.3.1`) or the Keras form of it."""
    _check_input(x, config, name)
    spec, name = config.layer, keras_name(name)
    if isinstance(spec, Skip):
        return x
    if isinstance(spec, Conv):
        return conv_bn_act(x, spec.out, spec.kernel, spec.stride, act=spec.act, eps=eps, name=f"{name}_conv")
    if isinstance(spec, (IBN, DepthwiseSeparable, FusedIBN)):
        y = _inverted_bottleneck(x, config, eps, name)
    elif isinstance(spec, Tucker):
        in_rank, out_rank = spec.ranks(config.in_channels)
        y = conv_bn_act(x, in_rank, 1, act=spec.act, eps=eps, name=f"{name}_compress")
        y = conv_bn_act(y, out_rank, spec.kernel, spec.stride, act=spec.act, eps=eps, name=f"{name}_core")
        y = conv_bn_act(y, spec.out, 1, act=None, eps=eps, name=f"{name}_project")
    elif isinstance(spec, (ShuffleBlock, XceptionBlock)):
        return _channel_split_block(x, config, eps, name)
    else:
        raise TypeError(f"no Keras lowering for layer kind {type(spec).__name__} ({spec.token()!r})")
    return keras.layers.Add(name=f"{name}_add")([y, x]) if config.residual else y


def _check_input(x, config: LayerConfig, name: str) -> None:
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[-1] != config.in_channels:
        raise ValueError(f"{name}: layer {config.key} takes [N, H, W, {config.in_channels}] (NHWC), got {shape}")
    if None not in shape[1:3] and tuple(shape[1:3]) != tuple(config.in_hw):
        raise ValueError(f"{name}: layer {config.key} was placed at {config.in_hw[0]}x{config.in_hw[1]}, "
                         f"the input is {shape[1]}x{shape[2]}; trace the spec at this resolution")


def _inverted_bottleneck(x, config: LayerConfig, eps: float, name: str):
    """`ir`, `ds`, `er`: [1x1 expand] -> k x k depthwise | k x k regular -> [SE] -> 1x1 linear."""
    spec = config.layer
    hidden = spec.hidden(config.in_channels)
    if isinstance(spec, IBN):
        y = conv_bn_act(x, hidden, 1, act=spec.act, eps=eps, name=f"{name}_expand")
        y = conv_bn_act(y, hidden, spec.kernel, spec.stride, depthwise=True, act=spec.act, eps=eps,
                        name=f"{name}_spatial")
    elif isinstance(spec, DepthwiseSeparable):
        y = conv_bn_act(x, hidden, spec.kernel, spec.stride, depthwise=True, act=spec.act, eps=eps,
                        name=f"{name}_spatial")
    else:  # fused: one regular conv expands and mixes space
        y = conv_bn_act(x, hidden, spec.kernel, spec.stride, act=spec.act, eps=eps, name=f"{name}_spatial")
    if spec.se:
        y = squeeze_excite(y, round_channels(hidden, spec.se), spec.act, name=f"{name}_se")
    return conv_bn_act(y, spec.out, 1, act=None, eps=eps, name=f"{name}_project")


def _channel_split_block(x, config: LayerConfig, eps: float, name: str):
    """`sh`, `xc`: stride 1 keeps the even channels and transforms the odd ones; stride 2 puts a
    dw k x k -> 1x1 projection of the whole input beside the main branch. Kept part first."""
    spec, cin = config.layer, config.in_channels
    mid, k, s, act = spec.mid(), spec.kernel, spec.stride, spec.act
    if s == 1:
        kept, x = EvenOddChannels(name=f"{name}_split")(x)
        branch_out = spec.out // 2
    else:
        kept = conv_bn_act(x, cin, k, s, depthwise=True, act=None, eps=eps, name=f"{name}_proj_0")
        kept = conv_bn_act(kept, cin, 1, act=act, eps=eps, name=f"{name}_proj_1")
        branch_out = spec.out - cin
    branch_in = x.shape[-1]
    if isinstance(spec, ShuffleBlock):
        units = [(mid, 1, 1, False, act), (mid, k, s, True, None), (branch_out, 1, 1, False, act)]
    else:
        units = [(branch_in, k, s, True, None), (mid, 1, 1, False, act), (mid, k, 1, True, None),
                 (mid, 1, 1, False, act), (mid, k, 1, True, None), (branch_out, 1, 1, False, act)]
    y = x
    for index, (out, kernel, stride, depthwise, unit_act) in enumerate(units):
        y = conv_bn_act(y, out, kernel, stride, depthwise=depthwise, act=unit_act, eps=eps, name=f"{name}_main_{index}")
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([kept, y])


# ---- SSDLite head parts -------------------------------------------------------------------
def apply_extra(x, mid: int, out: int, *, name: str, eps: float = HEAD_BN_EPS):
    """Torch `ExtraLayer` at `name` (`extras.0`): 1x1 to `mid` -> depthwise 3x3 stride 2 ->
    1x1 to `out`, each with BN and ReLU6."""
    name = keras_name(name)
    y = conv_bn_act(x, mid, 1, eps=eps, name=f"{name}_reduce")
    y = conv_bn_act(y, mid, 3, 2, depthwise=True, eps=eps, name=f"{name}_depthwise")
    return conv_bn_act(y, out, 1, eps=eps, name=f"{name}_expand")


def apply_predictor(x, out_channels: int, kernel: int = 3, *, name: str, eps: float = HEAD_BN_EPS):
    """Torch `Predictor` at `name` (`box_heads.0`): depthwise k x k + BN + ReLU6 -> 1x1 conv
    with bias to `out_channels` (anchors * code size). Returns [N, H, W, out_channels]."""
    name = keras_name(name)
    y = conv_bn_act(x, x.shape[-1], kernel, depthwise=True, eps=eps, name=f"{name}_depthwise")
    return keras.layers.Conv2D(out_channels, 1, use_bias=True, name=f"{name}_pointwise")(y)


__all__ = ["BACKBONE_BN_EPS", "HEAD_BN_EPS", "EvenOddChannels", "activation", "apply_extra", "apply_layer",
           "apply_predictor", "conv_bn_act", "keras_name", "require_tensorflow_backend", "squeeze_excite"]
