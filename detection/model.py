"""The SSDLite detector in torch, on any backbone spec.

`SSDLite(arch)` returns raw box deltas [N, A, 4] and class logits [N, A, C] (C = class slots,
background first when the head has one). Decoding and NMS live apart (`postprocess.py`):
export ships exactly this module's outputs and puts the standard TFLite post-processing op
behind them. Anchor order: map by map, row-major over (y, x), then the anchors of a location,
matching `anchors.ssd_anchors`.

Module names trace back to the spec and match the Keras lowering: `backbone.blocks[b][i]`,
`extras[i].{reduce,depthwise,expand}`, `box_heads[i]` / `class_heads[i]` with `.depthwise`
(ConvBNAct) and `.pointwise` (1x1 conv with bias).

With a feature pyramid in the architecture (NAS-FPN merging cells, `tdbnas.spaces.pyramid`),
the backbone feeds `pyramid` (`tdbnas.spaces.nn.pyramid.Pyramid`: `pyramid.lateral[j]`,
`pyramid.extra[j]`, `pyramid.cells[r][i]`) and the predictors run on its levels (the head is
`SSDLiteHead.resolve(arch)`: by default every level P<min>..P<max>, no extra layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tdbnas.detection.anchors import detector_anchors
from tdbnas.spaces import ArchSpec, SSDLiteHead, as_hw
from tdbnas.spaces.nn import Backbone, Pyramid
from tdbnas.spaces.nn.ops import DEFAULT_NORM, ConvBNAct, NormSettings, init_weights

# Head batch norm of the MobileDets configs: decay 0.97 (torch momentum 0.03), epsilon 0.001.
HEAD_NORM = NormSettings(eps=0.001, momentum=0.03)
# Class logits start at log(0.01 / 0.99): every anchor predicts "nothing" with p = 0.01, so the
# focal loss does not drown in easy negatives at the first steps (TF `class_prediction_bias_init`).
CLASS_BIAS_INIT = -4.6


class ExtraLayer(nn.Module):
    """SSDLite extra feature layer: 1x1 to depth/2, depthwise 3x3 stride 2, 1x1 to depth."""

    def __init__(self, in_channels: int, mid: int, out: int, norm: NormSettings = HEAD_NORM):
        super().__init__()
        self.reduce = ConvBNAct(in_channels, mid, 1, norm=norm)
        self.depthwise = ConvBNAct(mid, mid, 3, stride=2, groups=mid, norm=norm)
        self.expand = ConvBNAct(mid, out, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.depthwise(self.reduce(x)))


class Predictor(nn.Module):
    """Depthwise kxk + BN + ReLU6, then a 1x1 conv with bias to anchors * code size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, norm: NormSettings = HEAD_NORM):
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, kernel, groups=in_channels, norm=norm)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class SSDLite(nn.Module):
    def __init__(self, arch: ArchSpec, *, num_classes: int = 90, head: SSDLiteHead | None = None,
                 width_multiplier: float = 1.0, backbone_norm: NormSettings = DEFAULT_NORM,
                 head_norm: NormSettings = HEAD_NORM):
        super().__init__()
        head = head or SSDLiteHead(num_classes=num_classes)
        if head.num_classes != num_classes:
            head = SSDLiteHead(**{**head.__dict__, "num_classes": num_classes})
        head = head.resolve(arch)
        self.arch, self.head_spec, self.width_multiplier = arch, head, width_multiplier
        if arch.pyramid is None:
            self.pyramid = None
            self.backbone = Backbone(arch, width_multiplier, out_features=head.from_features, norm=backbone_norm)
            channels = list(self.backbone.out_channels)
        else:
            inputs = [info.name for info in arch.pyramid_inputs(width_multiplier)]
            self.backbone = Backbone(arch, width_multiplier, out_features=inputs, norm=backbone_norm)
            self.pyramid = Pyramid(arch.pyramid, self.backbone.out_channels, width_multiplier, head_norm)
            self._levels = [int(name[1:]) - arch.pyramid.min_level for name in head.from_features]
            channels = [arch.pyramid.scaled_width(width_multiplier)] * len(head.from_features)
        self.extras = nn.ModuleList()
        for depth in head.extra_depths:
            mid, out = head.extra_widths(depth, width_multiplier)
            self.extras.append(ExtraLayer(channels[-1], mid, out, head_norm))
            channels.append(out)
        anchors = head.anchors_per_location()
        self.box_heads = nn.ModuleList(Predictor(c, a * 4, head.kernel, head_norm) for c, a in zip(channels, anchors))
        self.class_heads = nn.ModuleList(Predictor(c, a * head.class_slots, head.kernel, head_norm)
                                         for c, a in zip(channels, anchors))
        init_weights(self.extras)
        init_weights(self.box_heads)
        init_weights(self.class_heads)
        for predictor in self.class_heads:
            nn.init.constant_(predictor.pointwise.bias, CLASS_BIAS_INIT)

    @property
    def num_classes(self) -> int:
        return self.head_spec.num_classes

    @property
    def class_slots(self) -> int:
        return self.head_spec.class_slots

    def anchors(self, resolution: int | Sequence[int]) -> np.ndarray:
        """Anchors (yc, xc, h, w) for inputs of this size, in the order of the outputs."""
        return detector_anchors(self.arch, as_hw(resolution), self.head_spec, self.width_multiplier)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps = list(self.backbone(images))
        if self.pyramid is not None:
            levels = self.pyramid(maps)  # P<min>..P<max>
            maps = [levels[index] for index in self._levels]
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        return maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.feature_maps(images)
        n = images.shape[0]
        boxes = [_flatten(head(x), n, 4) for head, x in zip(self.box_heads, maps)]
        classes = [_flatten(head(x), n, self.class_slots) for head, x in zip(self.class_heads, maps)]
        return torch.cat(boxes, dim=1), torch.cat(classes, dim=1)


def _flatten(prediction: torch.Tensor, batch: int, width: int) -> torch.Tensor:
    """[N, anchors * width, H, W] -> [N, H * W * anchors, width] (NHWC order, as TF reshapes)."""
    return prediction.permute(0, 2, 3, 1).reshape(batch, -1, width)


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
