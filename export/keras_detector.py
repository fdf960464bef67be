"""Whole Keras networks from a spec: the backbone, and the SSDLite detector whose two outputs
have the layout of the torch `SSDLite` (raw box deltas [N, A, 4], class logits
[N, A, class_slots]; per map NHWC flatten order, maps concatenated), for any (H, W).

Built only from the part functions of `keras_layers`, with the torch module paths as layer
names, so `transfer_weights` can copy a trained torch model in and the profiler's micro-models
are the same graphs as these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import keras

from tdbnas.export.keras_layers import (
    BACKBONE_BN_EPS,
    HEAD_BN_EPS,
    apply_extra,
    apply_layer,
    apply_predictor,
    require_tensorflow_backend,
)
from tdbnas.export.keras_pyramid import pyramid_features
from tdbnas.spaces.arch import ArchSpec
from tdbnas.spaces.channels import as_hw
from tdbnas.spaces.head import SSDLiteHead

INPUT_NAME = "images"
OUTPUT_NAMES = ("box_deltas", "class_logits")  # as the ONNX export names them


def backbone_features(x, arch: ArchSpec, width_multiplier: float = 1.0, *,
                      out_features: Sequence[str] | None = None, prefix: str = "",
                      eps: float = BACKBONE_BN_EPS) -> list:
    """Apply the backbone of `arch` to `x` [N, H, W, C] and return the endpoints named in
    `out_features` (default: all of C1..C5), in that order.

    As the torch `Backbone`, layers after the last requested endpoint are not built, and
    layer (b, i) is named `<prefix>blocks_<b>_<i>`."""
    if not isinstance(arch, ArchSpec):
        raise ValueError(f"arch must be an ArchSpec (e.g. ArchSpec.parse(text)), got {type(arch).__name__}")
    available = {info.name: info for info in arch.features(width_multiplier)}
    names = list(available) if out_features is None else list(out_features)
    missing = [name for name in names if name not in available]
    if missing or not names:
        raise ValueError(f"backbone has no endpoint(s) {missing or names}; it has {list(available)}")
    taps: dict[int, list[int]] = {}
    for slot, name in enumerate(names):
        taps.setdefault(available[name].layer_index, []).append(slot)
    hw = tuple(x.shape[1:3])
    if None in hw:
        raise ValueError(f"the backbone needs a static input size, got {tuple(x.shape)}")
    configs = arch.trace(hw, width_multiplier, in_channels=x.shape[-1])[: max(taps) + 1]
    outputs: list = [None] * len(names)
    for index, ((b, i, _), config) in enumerate(zip(arch.layers(), configs)):
        x = apply_layer(x, config, name=f"{prefix}blocks_{b}_{i}", eps=eps)
        for slot in taps.get(index, ()):
            outputs[slot] = x
    return outputs


def build_backbone(arch: ArchSpec, resolution: int | Sequence[int], width_multiplier: float = 1.0, *,
                   out_features: Sequence[str] | None = None, batch_size: int | None = 1,
                   in_channels: int = 3) -> keras.Model:
    """Keras backbone with NHWC input [batch, H, W, in_channels] and one output per endpoint.

    Layer names match a standalone torch `Backbone` (`blocks.3.1.expand.conv` ->
    `blocks_3_1_expand_conv`), so its state dict transfers directly."""
    require_tensorflow_backend()
    images = _input(resolution, batch_size, in_channels)
    features = backbone_features(images, arch, width_multiplier, out_features=out_features)
    return keras.Model(images, features, name="backbone")


def build_detector(arch: ArchSpec, resolution: int | Sequence[int], *, num_classes: int,
                   head: SSDLiteHead | None = None, width_multiplier: float = 1.0,
                   batch_size: int | None = 1) -> keras.Model:
    """The Keras SSDLite: input `images` [batch, H, W, 3], outputs `box_deltas` [batch, A, 4] and
    `class_logits` [batch, A, class_slots], equal to the torch `SSDLite(arch, ...)` outputs
    (with the architecture's feature pyramid between backbone and head, when it has one).

    `head` defaults to `SSDLiteHead(num_classes=num_classes)`; a head with another class count
    takes `num_classes`, as the torch model does."""
    require_tensorflow_backend()
    head = head or SSDLiteHead(num_classes=num_classes)
    if not isinstance(head, SSDLiteHead):
        raise ValueError(f"head must be an SSDLiteHead, got {type(head).__name__}")
    if head.num_classes != num_classes:
        head = replace(head, num_classes=num_classes)
    head = head.resolve(arch)  # with a pyramid: its levels
    images = _input(resolution, batch_size, 3)
    if arch.pyramid is None:
        maps = backbone_features(images, arch, width_multiplier, out_features=head.from_features, prefix="backbone_")
    else:
        inputs = [info.name for info in arch.pyramid_inputs(width_multiplier)]
        levels = pyramid_features(backbone_features(images, arch, width_multiplier, out_features=inputs,
                                                    prefix="backbone_"), arch.pyramid, width_multiplier)
        maps = [levels[int(name[1:]) - arch.pyramid.min_level] for name in head.from_features]
    for index, depth in enumerate(head.extra_depths):
        mid, out = head.extra_widths(depth, width_multiplier)
        maps.append(apply_extra(maps[-1], mid, out, name=f"extras_{index}", eps=HEAD_BN_EPS))
    boxes, classes = [], []
    for index, (x, anchors) in enumerate(zip(maps, head.anchors_per_location())):
        box = apply_predictor(x, anchors * 4, head.kernel, name=f"box_heads_{index}")
        cls = apply_predictor(x, anchors * head.class_slots, head.kernel, name=f"class_heads_{index}")
        # [N, H, W, anchors * width] -> [N, H * W * anchors, width]: the torch NHWC flatten.
        boxes.append(keras.layers.Reshape((-1, 4), name=f"box_heads_{index}_flatten")(box))
        classes.append(keras.layers.Reshape((-1, head.class_slots), name=f"class_heads_{index}_flatten")(cls))
    outputs = [_concat(parts, name) for parts, name in zip((boxes, classes), OUTPUT_NAMES)]
    return keras.Model(images, outputs, name="ssdlite")


def _input(resolution: int | Sequence[int], batch_size: int | None, channels: int):
    hw = as_hw(resolution)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None (dynamic), got {batch_size!r}")
    return keras.Input((*hw, channels), batch_size=batch_size, name=INPUT_NAME)


def _concat(parts: list, name: str):
    if len(parts) == 1:  # Concatenate needs two inputs; keep the output name all the same.
        return keras.layers.Identity(name=name)(parts[0])
    return keras.layers.Concatenate(axis=1, name=name)(parts)


__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "backbone_features", "build_backbone", "build_detector"]
