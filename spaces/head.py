"""The SSDLite detector's static shape: which feature maps, their sizes and widths, anchors
per location. Framework-free, so costs and latency enumeration need no forward pass; the
torch head (`tdbnas.detection`) and the Keras lowering (`tdbnas.export`) build from it.

Settings follow the MobileDet configs (reference §1.3): feature maps C4 and C5 plus four
extra layers of 512/256/256/128 channels, each `1x1 to depth/2 -> 3x3 depthwise stride 2
-> 1x1 to depth`; per map a depthwise 3x3 + 1x1 box predictor and class predictor; anchors
from `ssd_anchor_generator` with 3 boxes per location on the lowest map and 6 elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tdbnas.spaces.arch import ArchSpec
from tdbnas.spaces.channels import as_hw, same_output_size
from tdbnas.spaces.pyramid import level_hw


@dataclass(frozen=True)
class FeatureMap:
    name: str  # "C4", "C5", "extra1", ...
    hw: tuple[int, int]
    channels: int
    stride: int


@dataclass(frozen=True)
class SSDLiteHead:
    """Head settings. `num_classes` excludes background; with `background_class` the class
    predictor has `num_classes + 1` outputs per anchor, as in the TF Object Detection API
    (`add_background_class`), whose `TFLite_Detection_PostProcess` expects that layout."""

    from_features: tuple[str, ...] = ("C4", "C5")
    extra_depths: tuple[int, ...] = (512, 256, 256, 128)
    kernel: int = 3
    num_classes: int = 90
    background_class: bool = True
    min_depth: int = 16
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
    reduce_boxes_in_lowest_layer: bool = True
    # Anchor scales (fractions of the shorter image side) of the lowest and highest map, linear
    # in between: the MobileDets `ssd_anchor_generator` defaults. Data with smaller objects than
    # COCO-at-320 (e.g. 10-80 px objects at 160x160) may set smaller ones.
    min_scale: float = 0.2
    max_scale: float = 0.95

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        if not self.from_features:
            raise ValueError("the head needs at least one backbone feature map")
        if any(d < 1 for d in self.extra_depths):
            raise ValueError(f"extra layer depths must be positive, got {self.extra_depths}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")

    @property
    def num_maps(self) -> int:
        return len(self.from_features) + len(self.extra_depths)

    @property
    def class_slots(self) -> int:
        return self.num_classes + (1 if self.background_class else 0)

    def anchors_per_location(self) -> tuple[int, ...]:
        """3 on the lowest map (scales 0.1/0.2/0.2 at aspects 1/2/0.5), else one per aspect
        ratio plus the interpolated-scale square box (TF `ssd_anchor_generator`)."""
        regular = len(self.aspect_ratios) + 1
        counts = [regular] * self.num_maps
        if self.reduce_boxes_in_lowest_layer:
            counts[0] = 3
        return tuple(counts)

    def extra_widths(self, depth: int, width_multiplier: float = 1.0) -> tuple[int, int]:
        """(1x1 intermediate width, output width) of an extra layer, as TF's `depth_fn`."""
        def depth_fn(d: float) -> int:
            return max(int(d * width_multiplier), self.min_depth)
        return depth_fn(depth / 2), depth_fn(depth)

    def resolve(self, arch: ArchSpec) -> SSDLiteHead:
        """The head as it runs on `arch` (idempotent). Without a pyramid: itself. With one, the
        predictors read pyramid levels `P<k>`: a head naming backbone endpoints (the default C4,
        C5) takes every pyramid level instead and drops its extra layers, since the pyramid makes
        the coarse levels itself (NAS-FPN's P6/P7); a head naming pyramid levels keeps them and
        its extra layers. Build every head-shaped thing (maps, anchors, predictors) from this."""
        levels = [name for name in self.from_features if name.startswith("P")]
        pyramid = getattr(arch, "pyramid", None)  # endpoint-only stand-ins (search.minimum) have none
        if pyramid is None:
            if levels:
                raise ValueError(f"the head reads pyramid level(s) {levels}, but the architecture has no pyramid")
            return self
        names = pyramid.level_names()
        if not levels:
            return replace(self, from_features=names, extra_depths=())
        if len(levels) != len(self.from_features):
            raise ValueError(f"the head reads {list(self.from_features)}: with a pyramid it reads pyramid levels "
                             f"only ({', '.join(names)})")
        missing = [name for name in levels if name not in names]
        if missing:
            raise ValueError(f"the pyramid has no level(s) {missing}; it has {', '.join(names)}")
        return self

    def feature_maps(self, arch: ArchSpec, resolution: int | Sequence[int],
                     width_multiplier: float = 1.0) -> tuple[FeatureMap, ...]:
        """Every map the predictors run on, with size and width (of the head resolved for `arch`)."""
        hw = as_hw(resolution)
        head = self.resolve(arch)
        maps = []
        for name in head.from_features:
            if name.startswith("P"):
                level = int(name[1:])
                maps.append(FeatureMap(name, level_hw(hw, level), arch.pyramid.scaled_width(width_multiplier),
                                       2**level))
                continue
            info = arch.feature(name, width_multiplier)
            maps.append(FeatureMap(name, (same_output_size(hw[0], info.stride),
                                          same_output_size(hw[1], info.stride)), info.channels, info.stride))
        last = maps[-1]
        for index, depth in enumerate(head.extra_depths, start=1):
            size = (same_output_size(last.hw[0], 2), same_output_size(last.hw[1], 2))
            last = FeatureMap(f"extra{index}", size, head.extra_widths(depth, width_multiplier)[1], last.stride * 2)
            maps.append(last)
        return tuple(maps)

    def num_anchors(self, arch: ArchSpec, resolution: int | Sequence[int]) -> int:
        maps = self.feature_maps(arch, resolution)
        return sum(m.hw[0] * m.hw[1] * a for m, a in zip(maps, self.resolve(arch).anchors_per_location()))


def head_from_settings(settings: dict, num_classes: int) -> SSDLiteHead:
    """The MobileDets default head with `settings` (SSDLiteHead fields, lists allowed) applied:
    the `head` section of a run or training config."""
    if not isinstance(settings, dict):
        raise ValueError(f"head settings must be a mapping of SSDLiteHead fields, got {settings!r}")
    known = set(SSDLiteHead.__dataclass_fields__) - {"num_classes"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown head settings {unknown}; known: {sorted(known)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return SSDLiteHead(**{**overrides, "num_classes": num_classes})

