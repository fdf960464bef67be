"""Keras lowering of the feature pyramid (NAS-FPN merging cells), part by part.

Mirrors `tdbnas.spaces.nn.pyramid` (torch) with the same part boundaries as the latency units
(`tdbnas.spaces.pyramid_layout`), so `keras_detector` builds whole pyramids and the profiler
builds one micro-model per part from the same functions. Choices:
  * 2x2 stride-2 `MaxPooling2D` with 'SAME' padding (TFLite MAX_POOL_2D), equal to torch's
    `max_pool2d(2, 2, ceil_mode=True)`: the odd edge row/column is pooled alone;
  * upsampling as nearest-neighbour with half-pixel centres (torch `upsample`, TF
    `resize_nearest_neighbor(half_pixel_centers=True)`), lowered without RESIZE_NEAREST_NEIGHBOR:
    XNNPACK does not take the int8 resize, so every resize split the CPU graph into another
    delegate partition (5 for MobileDet-EdgeTPU + FPN). Instead each axis is repeated k times by
    CONCATENATION + RESHAPE, and the rows the resize would read are cut out of the repeat by
    STRIDED_SLICE + CONCATENATION (`nearest_runs`); the values are the same, bit for bit;
  * global-pooling attention as `GlobalMaxPooling2D` (REDUCE_MAX) -> sigmoid (LOGISTIC) ->
    `Multiply` (broadcast MUL) -> `Add`; the ReLU after a cell's merge follows the last `Add`,
    which the converter fuses into it;
  * names are torch module paths with `.` -> `_` (`pyramid.cells.0.3.conv.bn` ->
    `pyramid_cells_0_3_conv_bn`), so `transfer_weights` pairs them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import keras

from tdbnas.export.keras_layers import HEAD_BN_EPS, conv_bn_act, keras_name
from tdbnas.spaces.nn.pyramid import nearest_indices
from tdbnas.spaces.pyramid import PyramidSpec


def apply_lateral(x, out: int, *, name: str, eps: float = HEAD_BN_EPS):
    """Torch `pyramid.lateral.<j>` (a `ConvBNAct` without activation): 1x1 conv -> BN."""
    return conv_bn_act(x, out, 1, act=None, eps=eps, name=name)


def apply_pyramid_conv(x, stride: int = 1, separable: bool = False, *, name: str, eps: float = HEAD_BN_EPS):
    """Torch `PyramidConv`: ReLU -> 3x3 conv -> BN, or ReLU -> 3x3 depthwise -> 1x1 -> BN."""
    name = keras_name(name)
    channels = x.shape[-1]
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if not separable:
        return conv_bn_act(x, channels, 3, stride, act=None, eps=eps, name=f"{name}_conv")
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
    return conv_bn_act(x, channels, 1, act=None, eps=eps, name=f"{name}_pointwise")


def apply_resample(x, levels: int, target_hw: Sequence[int] | None = None, *, name: str):
    """Down `levels` > 0 levels by 2x2 'SAME' max-pools, or up (`levels` < 0) by one nearest
    resize to `target_hw`."""
    name = keras_name(name)
    if levels > 0:
        for step in range(levels):
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"{name}_pool{step}")(x)
        return x
    if levels == 0 or target_hw is None:
        raise ValueError(f"{name}: upsampling needs a negative level count and the target size")
    height, width = (int(v) for v in target_hw)
    x = _nearest_along(x, 1, height, name=f"{name}_up_rows")
    return _nearest_along(x, 2, width, name=f"{name}_up_cols")


def nearest_runs(size_in: int, size_out: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """`(k, runs)`: a nearest resize (half-pixel centres) from `size_in` to `size_out` rows,
    written as "repeat every row k times, then keep the rows in `runs`" ([start, stop) ranges of
    the repeated axis). An upsampling reads each source row one or more times, in order, so its
    output is a subsequence of the k-fold repeat, k the most times any row is read."""
    sources = nearest_indices(size_in, size_out)
    k = max(Counter(sources).values())
    picked, seen = [], Counter()
    for j in sources:  # the n-th read of row j takes copy n of row j
        picked.append(k * j + seen[j])
        seen[j] += 1
    runs: list[list[int]] = []
    for position in picked:
        if runs and runs[-1][1] == position:
            runs[-1][1] += 1
        else:
            runs.append([position, position + 1])
    return k, tuple((start, stop) for start, stop in runs)


def _nearest_along(x, axis: int, size_out: int, *, name: str):
    """Nearest resize of NHWC `x` along `axis` (1: rows, 2: columns) with delegate-friendly ops."""
    size_in = int(x.shape[axis])
    if size_in == size_out:
        return x
    if size_out < size_in:
        raise ValueError(f"{name}: upsampling from {size_in} to {size_out} would shrink the map")
    k, runs = nearest_runs(size_in, size_out)
    height, width, channels = (int(v) for v in x.shape[1:])
    # Concatenating k copies on the next axis and folding it back repeats each row (column) k
    # times in place: [H, k*W, C] -> [k*H, W, C]; [H, W, k*C] -> [H, k*W, C].
    if k > 1:
        x = keras.layers.Concatenate(axis=axis + 1, name=f"{name}_copies")([x] * k)
        shape = (k * height, width, channels) if axis == 1 else (height, k * width, channels)
        x = keras.layers.Reshape(shape, name=f"{name}_repeat")(x)
    if runs == ((0, k * size_in),):
        return x
    index = (slice(None),) * axis
    pieces = [x[index + (slice(start, stop),)] for start, stop in runs]
    return pieces[0] if len(pieces) == 1 else keras.layers.Concatenate(axis=axis, name=f"{name}_pick")(pieces)


def apply_merge(a, b, op: str, gate: int | None, *, name: str):
    """`sum`: a + b; `gp`: g + o * sigmoid(global max of g), g the input `gate` points at."""
    name = keras_name(name)
    if op == "sum":
        return keras.layers.Add(name=f"{name}_sum")([a, b])
    if op != "gp":
        raise ValueError(f"{name}: unknown binary op {op!r}")
    g, o = (a, b) if gate == 0 else (b, a)
    weight = keras.layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_gate_max")(g)  # [N, 1, 1, C]
    weight = keras.layers.Activation("sigmoid", name=f"{name}_gate")(weight)
    scaled = keras.layers.Multiply(name=f"{name}_gate_scale")([o, weight])
    return keras.layers.Add(name=f"{name}_attend")([g, scaled])


def apply_cell(inputs: Sequence, op: str, gate: int | None, separable: bool = False, *, name: str,
               eps: float = HEAD_BN_EPS):
    """A merging cell on inputs already at its level: the binary op on the first two, the rest
    (absorbed maps) added in order, then the cell's ReLU -> conv -> BN (torch `pyramid.cells.r.i`)."""
    if len(inputs) < 2:
        raise ValueError(f"{name}: a cell merges at least two maps, got {len(inputs)}")
    key = keras_name(name)
    x = apply_merge(inputs[0], inputs[1], op, gate, name=key)
    for index, other in enumerate(inputs[2:]):
        x = keras.layers.Add(name=f"{key}_absorb{index}")([x, other])
    return apply_pyramid_conv(x, 1, separable, name=name, eps=eps)


def pyramid_features(features: Sequence, spec: PyramidSpec, width_multiplier: float = 1.0, *,
                     name: str = "pyramid", eps: float = HEAD_BN_EPS) -> list:
    """The pyramid's maps P<min>..P<max> from backbone maps C<min>.. (level order), as
    `tdbnas.spaces.nn.pyramid.pyramid_forward` computes them."""
    width = spec.scaled_width(width_multiplier)
    pool = [x if x.shape[-1] == width else apply_lateral(x, width, name=f"{name}.lateral.{j}", eps=eps)
            for j, x in enumerate(features)]
    for j in range(spec.num_levels - len(features)):
        below = pool[-1]
        pool.append(apply_resample(below, 1, name=f"{name}.extra.{j}") if spec.extra == "pool" else
                    apply_pyramid_conv(below, 2, spec.separable, name=f"{name}.extra.{j}", eps=eps))
    plan, count, low = spec.plan(), spec.num_levels, spec.min_level
    for r in range(spec.stack):
        sizes = [tuple(x.shape[1:3]) for x in pool]
        nodes, levels = list(pool), list(spec.levels)
        for c in plan:
            cell = f"{name}.cells.{r}.{c.index}"
            inputs = []
            for k, index in enumerate(c.inputs):
                x, level = nodes[index], levels[index]
                if level != c.level:
                    x = apply_resample(x, c.level - level, sizes[c.level - low] if level > c.level else None,
                                       name=f"{cell}.in{k}")
                inputs.append(x)
            nodes.append(apply_cell([*inputs, *(nodes[index] for index in c.absorbed)], c.op, c.gate,
                                    spec.separable, name=cell, eps=eps))
            levels.append(c.level)
        outputs = {levels[n]: nodes[n] for n in range(len(nodes) - count, len(nodes))}
        pool = [outputs[level] for level in spec.levels]
    return pool


__all__ = ["apply_cell", "apply_lateral", "apply_merge", "apply_pyramid_conv", "apply_resample", "pyramid_features"]
