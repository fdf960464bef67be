"""The built-in search spaces and reference architectures, in registries that refuse
duplicate names. Users add their own with `register_space` / `register_arch`.

Published numbers sit next to each reference (like torchvision's weight metadata) so
reports can put them beside measured ones; `source` says where each comes from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdbnas.spaces.arch import PYRAMID_SEPARATOR, ArchSpec
from tdbnas.spaces.pyramid import PyramidSpec
from tdbnas.spaces.registry import Registry
from tdbnas.spaces.space import BlockSpace, SearchSpace


@dataclass(frozen=True)
class ReferenceArch:
    name: str
    arch: ArchSpec
    title: str
    source: str
    #: Published figures, e.g. {"madds_b": 1.53, "params_m": 4.20, "latency_ms": {...}, "map": ...}
    published: dict[str, Any] = field(default_factory=dict)
    #: The built-in space this architecture belongs to, if any.
    space: str | None = None


def _load_spaces() -> None:
    from tdbnas.spaces import detnas, mobiledets

    for description in mobiledets.space_descriptions() + detnas.space_descriptions():
        SPACES.add(description["name"], BlockSpace.from_description(description))


def _load_archs() -> None:
    from tdbnas.spaces import detnas, mobiledets

    s1 = "tensorflow/models research/object_detection/models/ssd_mobiledet_feature_extractor.py"
    configs = "ssdlite_mobiledet_*_320x320_coco_sync_4x4.config headers; TF1 detection zoo"
    refs = [
        ReferenceArch("mobiledet-cpu", ArchSpec.parse(mobiledets.MOBILEDET_CPU), "MobileDet-CPU", s1,
                      {"madds_b": 0.45, "params_m": 4.21, "latency_ms": {"pixel1_cpu": 113.0},
                       "map_coco14_minival": 24.1, "map_coco17_val": 23.5, "source": configs}, "ibn-cpu"),
        ReferenceArch("mobiledet-edgetpu", ArchSpec.parse(mobiledets.MOBILEDET_EDGETPU), "MobileDet-EdgeTPU", s1,
                      {"madds_b": 1.53, "params_m": 4.20, "latency_ms": {"pixel4_edgetpu": 6.9},
                       "map_coco14_minival": 26.0, "map_coco17_val": 25.2, "source": configs}, "tdb"),
        ReferenceArch("mobiledet-dsp", ArchSpec.parse(mobiledets.MOBILEDET_DSP), "MobileDet-DSP", s1,
                      {"madds_b": 2.82, "params_m": 7.16, "latency_ms": {"pixel4_dsp": 12.3},
                       "map_coco14_minival": 28.9, "map_coco17_val": 28.4, "source": configs}, "tdb"),
        ReferenceArch("mobiledet-gpu", ArchSpec.parse(mobiledets.MOBILEDET_GPU), "MobileDet-GPU", s1,
                      {"madds_b": 5.07, "params_m": 13.11,
                       "latency_ms": {"jetson_xavier_fp32": 11.0, "jetson_xavier_fp16": 3.2,
                                      "jetson_xavier_int8": 2.3},
                       "map_coco14_minival": 28.7, "map_coco17_val": 27.5, "source": configs}, "tdb"),
        ReferenceArch("mobilenetv2", ArchSpec.parse(mobiledets.MOBILENET_V2), "MobileNetV2 (SSDLite baseline)",
                      "Sandler et al. 2018 (arXiv 1801.04381); TF OD API ssd_mobilenet_v2_feature_extractor",
                      {"madds_b": 0.8, "params_m": 4.3, "map_coco": 22.1,
                       "latency_ms": {"pixel1_cpu": 162.0, "pixel4_edgetpu": 6.8},
                       "source": "MobileNetV2 paper Table 6 (MAdds, params, mAP); TF OD API release notes "
                                 "(Pixel-1 CPU 162 ms; Pixel-4 Edge TPU 6.8 ms)"}),
        ReferenceArch("detnas-300m", SPACES.get("detnas-small").decode(detnas.DETNAS_300M),
                      "DetNAS-COCO-FPN-300M", "megvii-model/DetNAS maskrcnn_benchmark/modeling/backbone/detnasnet.py",
                      {"imagenet_flops_m": 300, "map_coco_minival_fpn": 36.6,
                       "source": "megvii-model/DetNAS README (FPN detector, not SSDLite)"}, "detnas-small"),
        ReferenceArch("detnas-retinanet-300m", SPACES.get("detnas-small").decode(detnas.DETNAS_RETINANET_300M),
                      "DetNAS-COCO-RetinaNet-300M",
                      "megvii-model/DetNAS maskrcnn_benchmark/modeling/backbone/detnasnet.py",
                      {"imagenet_flops_m": 300, "map_coco_minival_retinanet": 34.1,
                       "source": "megvii-model/DetNAS README (RetinaNet detector, not SSDLite)"}, "detnas-small"),
        ReferenceArch("detnas-1.3g", SPACES.get("detnas-large").decode(detnas.DETNAS_1_3G),
                      "DetNAS-COCO-FPN-1.3G", "megvii-model/DetNAS maskrcnn_benchmark/modeling/backbone/detnasnet.py",
                      {"imagenet_flops_m": 1300, "map_coco_minival_fpn": 40.3,
                       "source": "megvii-model/DetNAS README (FPN detector, not SSDLite)"}, "detnas-large"),
    ]
    for ref in refs:
        ARCHS.add(ref.name, ref)


@dataclass(frozen=True)
class NamedPyramid:
    """A feature pyramid by name: `resolve_arch("mobiledet-edgetpu+nasfpn-lite")` puts it on a backbone."""

    name: str
    spec: PyramidSpec
    source: str


def _load_pyramids() -> None:
    from tdbnas.spaces.pyramid import named_pyramids

    for name, (spec, source) in named_pyramids().items():
        PYRAMIDS.add(name, NamedPyramid(name, spec, source))


SPACES: Registry[SearchSpace] = Registry("search space", _load_spaces)
ARCHS: Registry[ReferenceArch] = Registry("reference architecture", _load_archs)
PYRAMIDS: Registry[NamedPyramid] = Registry("feature pyramid", _load_pyramids)


def get_space(name: str) -> SearchSpace:
    return SPACES.get(name)


def register_space(space: SearchSpace) -> SearchSpace:
    return SPACES.add(space.name, space)


def get_reference(name: str) -> ReferenceArch:
    return ARCHS.get(name)


def register_arch(name: str, arch: ArchSpec, title: str = "", source: str = "user",
                  published: dict[str, Any] | None = None, space: str | None = None) -> ReferenceArch:
    return ARCHS.add(name, ReferenceArch(name, arch, title or name, source, dict(published or {}), space))


def register_pyramid(name: str, spec: PyramidSpec, source: str = "user") -> NamedPyramid:
    return PYRAMIDS.add(name, NamedPyramid(name, spec, source))


def resolve_pyramid(text: str) -> PyramidSpec:
    """A registered pyramid name or a pyramid section (`fpn_p3-7_c64,...`)."""
    if text in PYRAMIDS:
        return PYRAMIDS.get(text).spec
    try:
        return PyramidSpec.parse(text)
    except ValueError as exc:
        if "," in text or text.startswith("fpn_"):
            raise
        close = difflib.get_close_matches(text, PYRAMIDS.names(), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else f" (registered: {', '.join(PYRAMIDS.names())})"
        raise ValueError(f"{text!r} is not a registered pyramid{hint}, nor a pyramid section: {exc}") from None


def resolve_arch(text: str) -> ArchSpec:
    """A registered name, a path to an architecture JSON file, or an architecture string; any of
    the first two may be followed by `+` and a pyramid name or section
    (`mobiledet-edgetpu+nasfpn-lite`)."""
    backbone, plus, pyramid = text.partition(PYRAMID_SEPARATOR)
    if plus and (backbone in ARCHS or pyramid in PYRAMIDS or backbone.endswith(".json")):
        base = resolve_arch(backbone)
        if base.pyramid is not None:
            raise ValueError(f"{backbone!r} already has a pyramid; name a backbone before {PYRAMID_SEPARATOR!r}")
        return base.with_pyramid(resolve_pyramid(pyramid))
    if text in ARCHS:
        return ARCHS.get(text).arch
    path = Path(text)
    if text.endswith(".json") and path.is_file():
        return ArchSpec.from_json(path.read_text())
    try:
        return ArchSpec.parse(text)
    except ValueError as exc:
        if "/" in text or "," in text:
            raise
        close = difflib.get_close_matches(text, ARCHS.names(), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else f" (registered: {', '.join(ARCHS.names())})"
        raise ValueError(f"{text!r} is not a registered architecture{hint}, nor an architecture string: "
                         f"{exc}") from None
