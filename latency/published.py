"""Published end-to-end Edge TPU latencies, the models behind them written in the architecture
language, and the modelled profiles' constants fitted to them with leave-one-out error.

The data (`reference/edgetpu_published.json`, sources and dates in `reference/edgetpu_published.md`):
Coral's "Edge TPU performance benchmarks" Table 1 (USB Accelerator and Dev Board columns) and the
Pixel-4 Edge TPU latencies of the MobileDets / TF Object Detection API releases, one profile per
device: `coral-usb`, `coral-devboard`, `pixel4-edgetpu`. Every model the language can express is
listed with its architecture string, input size and head (`classifier`: global pool + 1x1 logits;
`ssd`: the TF OD API SSD head, `head_primitives(..., depthwise=False)`; `ssdlite`); the
others are listed with the reason they cannot be written.

The fit (`fit_device`) keeps the structure of `tdbnas.latency.modelled`'s Edge TPU model: per op
`compute * ms_per_gmac + bytes * ms_per_mb + op_overhead_ms` (regular-conv-equivalent MACs,
int8 activation traffic, the per-op overhead fixed at the module's assumed 5 us), parameter
bytes beyond the on-chip cache streamed at the per-byte rate, plus, for detection models, a
host-CPU cost per anchor (`TFLite_Detection_PostProcess` runs on the CPU: on a desktop behind
USB, or on the Dev Board's Cortex-A53). The constants are least squares on relative
error, non-negative and with the conv rate bounded by the 4 TOPS peak; `leave_one_out` refits
without each model and predicts it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.latency import modelled
from tdbnas.spaces import ArchSpec, SSDLiteHead, as_hw, head_primitives, layer_primitives, resolve_arch
from tdbnas.spaces.primitives import Primitive, classifier_primitives

REFERENCE = Path(__file__).resolve().parent / "reference" / "edgetpu_published.json"
HEADS = ("classifier", "ssd", "ssdlite")


@dataclass(frozen=True)
class PublishedModel:
    name: str
    title: str
    arch: ArchSpec
    resolution: int
    head: dict[str, Any]
    latency_ms: dict[str, float]
    source: str
    approximate: str | None = None

    def detection_head(self) -> SSDLiteHead:
        return SSDLiteHead(num_classes=int(self.head.get("classes", 90)))

    def ops(self) -> list[Primitive]:
        """Every op of the whole model (backbone up to the last tapped layer, then the head),
        with unfusable activations as their own ops."""
        hw = as_hw(self.resolution)
        configs = self.arch.trace(hw)
        kind = self.head["kind"]
        if kind == "classifier":
            last = configs[-1]
            tail = classifier_primitives(last.out_channels, last.out_hw, int(self.head.get("classes", 1001)))
        else:
            head = self.detection_head()
            configs = configs[:max(self.arch.feature(name).layer_index for name in head.from_features) + 1]
            tail = head_primitives(head, self.arch, hw, depthwise=kind == "ssdlite",
                                   box_kernel=int(self.head["box_kernel"]) if "box_kernel" in self.head else None)
        return modelled.with_unfused_activations([op for c in configs for op in layer_primitives(c)] + tail)

    def anchors(self) -> int:
        return 0 if self.head["kind"] == "classifier" else self.detection_head().num_anchors(self.arch,
                                                                                             self.resolution)


@dataclass(frozen=True)
class Published:
    models: tuple[PublishedModel, ...]
    not_expressible: tuple[dict[str, Any], ...]
    sources: dict[str, Any]
    profiles: dict[str, Any]

    def points(self, profile: str) -> list[PublishedModel]:
        """The models with a published latency on `profile`."""
        return [m for m in self.models if profile in m.latency_ms]


def load_published(path: str | Path = REFERENCE) -> Published:
    data = json.loads(Path(path).read_text())
    if data.get("format") != "tdbnas.published-latency":
        raise ValueError(f"{path} is not a tdbnas published-latency file")
    models = []
    for entry in data["models"]:
        if entry["head"]["kind"] not in HEADS:
            raise ValueError(f"{path}: model {entry['name']!r} has head {entry['head']['kind']!r}, not one of {HEADS}")
        latency = {k: float(v) for k, v in entry["latency_ms"].items()}
        models.append(PublishedModel(entry["name"], entry["title"], resolve_arch(entry["arch"]),
                                     int(entry["resolution"]), dict(entry["head"]), latency, entry["source"],
                                     entry.get("approximate")))
    return Published(tuple(models), tuple(data.get("not_expressible", [])), data["sources"], data["profiles"])


# ---- the fit ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Terms:
    """What the fit is linear in, for one model on one device family."""

    gmac: float         # regular-conv-equivalent GMAC
    moved_mb: float     # int8 activation traffic plus parameters streamed past the cache, MB
    ops: int
    kanchors: float     # detection anchors / 1000 (CPU post-processing)


def terms(model: PublishedModel, device: str = "edgetpu") -> Terms:
    ops = model.ops()
    device_model = modelled.DEVICES.get(device, modelled.DEVICES["edgetpu"])
    if not all(modelled.is_supported(op, device) for op in ops):
        raise ValueError(f"{model.name} has an op the {device} does not run: the linear fit needs fully "
                         "accelerated models")
    params = sum(modelled.param_bytes(op) for op in ops)
    cache = device_model.param_cache_bytes
    streamed = max(0.0, params - cache) if cache is not None else 0.0
    return Terms(sum(modelled.compute_macs(op, device) for op in ops) / 1e9,
                 (sum(modelled.activation_bytes(op, device) for op in ops) + streamed) / 1e6, len(ops),
                 model.anchors() / 1000)


@dataclass(frozen=True)
class DeviceFit:
    ms_per_gmac: float
    ms_per_mb: float
    ms_per_kanchor: float
    op_overhead_ms: float

    def predict(self, t: Terms) -> float:
        return (t.gmac * self.ms_per_gmac + t.moved_mb * self.ms_per_mb + t.kanchors * self.ms_per_kanchor
                + t.ops * self.op_overhead_ms)

    def to_json(self) -> dict[str, float]:
        return {"ms_per_gmac": self.ms_per_gmac, "ms_per_mb": self.ms_per_mb, "ms_per_kanchor": self.ms_per_kanchor,
                "op_overhead_ms": self.op_overhead_ms,
                "conv_fraction_of_peak": (1e12 / self.ms_per_gmac / modelled.EDGETPU_PEAK_MACS_PER_S
                                          if self.ms_per_gmac > 0 else math.inf)}


def fit_device(points: Sequence[tuple[Terms, float]], op_overhead_ms: float = modelled.OP_OVERHEAD_MS,
               anchors: bool = True) -> DeviceFit:
    """Bounded least squares of (ms_per_gmac, ms_per_mb[, ms_per_kanchor]) on relative error, with
    the per-op overhead fixed: every constant non-negative and the conv rate at most the 4 TOPS
    peak (ms_per_gmac >= 1e12 / EDGETPU_PEAK_MACS_PER_S). `anchors=False` (or no detection model
    among the points) leaves the post-processing term out."""
    from scipy.optimize import lsq_linear

    if not points:
        raise ValueError("a device fit needs at least one published latency")
    use_anchors = anchors and any(t.kanchors > 0 for t, _ in points)
    rows, rhs = [], []
    for t, ms in points:
        row = [t.gmac, t.moved_mb] + ([t.kanchors] if use_anchors else [])
        rows.append([x / ms for x in row])
        rhs.append((ms - t.ops * op_overhead_ms) / ms)
    lower = [1e12 / modelled.EDGETPU_PEAK_MACS_PER_S] + [0.0] * (len(rows[0]) - 1)
    solution = lsq_linear(np.array(rows), np.array(rhs), bounds=(lower, np.inf)).x
    return DeviceFit(float(solution[0]), float(solution[1]), float(solution[2]) if use_anchors else 0.0,
                     op_overhead_ms)


@dataclass(frozen=True)
class LeaveOneOut:
    model: str
    published_ms: float
    predicted_ms: float

    @property
    def error_pct(self) -> float:
        return 100 * (self.predicted_ms - self.published_ms) / self.published_ms


def leave_one_out(published: Published, profile: str, *, family: str = "edgetpu",
                  op_overhead_ms: float = modelled.OP_OVERHEAD_MS, anchors: bool = True,
                  resolutions: dict[str, int] | None = None) -> list[LeaveOneOut]:
    """Each model of `profile` predicted by the fit to all the others. `resolutions` overrides
    some models' input size (sensitivity to an uncertain label)."""
    models = published.points(profile)
    if resolutions:
        models = [PublishedModel(m.name, m.title, m.arch, resolutions.get(m.name, m.resolution), m.head, m.latency_ms,
                                 m.source, m.approximate) for m in models]
    data = [(m, terms(m, family), m.latency_ms[profile]) for m in models]
    out = []
    for held, t_held, ms in data:
        fitted = fit_device([(t, y) for m, t, y in data if m is not held], op_overhead_ms, anchors)
        out.append(LeaveOneOut(held.name, ms, fitted.predict(t_held)))
    return out


def fit_profile(published: Published, profile: str, *, family: str = "edgetpu",
                op_overhead_ms: float = modelled.OP_OVERHEAD_MS, anchors: bool = True) -> DeviceFit:
    return fit_device([(terms(m, family), m.latency_ms[profile]) for m in published.points(profile)],
                      op_overhead_ms, anchors)


__all__ = ["DeviceFit", "LeaveOneOut", "Published", "PublishedModel", "REFERENCE", "Terms", "fit_device",
           "fit_profile", "leave_one_out", "load_published", "terms"]
