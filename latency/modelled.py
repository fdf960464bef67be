"""Modelled Edge TPU and Hexagon DSP profiles: per-op analytic latency for hardware that is not
attached here, fitted to the few published end-to-end latencies. Every number this module
produces is MODELLED, not measured; the profiles it fills have kind "modelled".

Each unit (`tdbnas.latency.units`) is cut into the ops of `tdbnas.spaces.primitives` (plus one
element-wise op per activation TFLite cannot fuse into a conv: HARD_SWISH, LOGISTIC), and
each op on the accelerator costs

    t = compute * ms_per_gmac / 1e9  +  bytes * ms_per_mb / 1e6  +  op_overhead_ms

    compute  MACs of a regular conv; MACs / DEPTHWISE_EFFICIENCY of a depthwise conv (1/3:
             MobileDets, arXiv 2004.14525 §1, reference mobiledets.md §5: "a regular conv can
             use the Edge TPU ~3x more efficiently than its depthwise variant despite ~7x more
             FLOPs"); element-wise ops count one depthwise-rate MAC per element
    bytes    int8 activations read and written (the memory-traffic term)

Edge TPU (reference latency.md §5.1, §7 facts 6-7):
  * peak 4 TOPS = 2 TMAC/s (coral.ai FAQ): the fitted conv rate must stay below it;
  * one CPU/TPU split: the first unsupported op and every op after it run on the CPU (Coral
    model requirements). The only unsupported op our spaces can produce is HARD_SWISH (open
    feature request google-coral/edgetpu#272, compiler 15.0); SE's MEAN, LOGISTIC, MUL and
    1x1 convs, ADD, CONCATENATION are in the Coral supported-op table. So a hard-swish network
    (the `ibn-cpu` space) runs on the CPU from its first hard-swish on. The DetNAS channel
    split lowers to STRIDED_SLICE, treated as supported (not verified against the table);
    the feature pyramid's MAX_POOL_2D, RESIZE_NEAREST_NEIGHBOR and REDUCE_MAX (global-pooling
    attention) are in the table (`tdbnas.export.edgetpu.SUPPORTED_OPS`), each priced as an
    element-wise op on its larger tensor (a resize writes 4x what it reads);
  * ~7.5 MiB on-chip parameter cache (compiler logs: used + remaining = 7.50 MiB); parameter
    bytes beyond it are streamed from off-chip memory on every inference.
  The split and the streaming depend on the whole model, so they are not in any unit's entry:
  `whole_model_ms` adds them per detector and `LatencyPredictor` calls it for profiles this
  module filled. `TFLite_Detection_PostProcess` runs on the CPU (google-coral/edgetpu#515) but is
  not a unit of any detector; like input quantisation it is left to the calibration's `b`.

Hexagon DSP (TFLite Hexagon delegate on a Pixel 4 / Snapdragon 855, Hexagon 690, HVX v66 with
128-byte vectors; reference latency.md §5.2):
  * quantized only; Hexagon NN keeps activations in the "depth32" layout, depth padded to a
    multiple of 32 and width to a multiple of 4 (XiaoMi/nnlib docs/d32.txt), so compute and
    bytes are counted on padded shapes: channel alignment is the vector-unit utilisation;
  * the delegate's README accepts DepthwiseConv2D only with filter width 3 (the code at
    @1fa9397d does not check it; we follow the documentation): a 5x5 depthwise runs on the CPU,
    op by op (the delegate partitions the graph around it; no single-split rule); Hardswish,
    Logistic, Mean, Mul, Add, Concat, MaxPool2D and Resize Nearest Neighbor are delegated, but
    REDUCE_MAX is not in the README's list, so a pyramid's global-pooling attention ("gp")
    computes its gate on the CPU (with the transfer of the map it reduces);
  * depthwise inefficiency: no primary source quantifies it on HVX (reference §5.2), so the
    Edge TPU's 1/3 is reused (MobileDets: both accelerators are "designed to accelerate regular
    convolutions"). ASSUMED;
  * memory traffic: on accelerators "the memory access cost is relatively high" (nn-Meter docs,
    reference §1.3), but one published point cannot size it, so the DSP keeps the Edge TPU
    fit's per-byte : per-MAC ratio and only the overall scale is fitted. ASSUMED.

CPU fallback (both devices): ops run at `CPU_MS_PER_GMAC`, fitted to the published Pixel-1 CPU
latencies of MobileDet-CPU (113 ms) and MobileNetV2-SSDLite (162 ms): float models on an older
phone, so the fallback cost is pessimistic for a Pixel 4. Moving a tensor between accelerator
and CPU, and streaming parameters, cost the Edge TPU's fitted per-byte rate (ASSUMED: no
published number; none of the calibration models exceeds the cache or falls back).

Calibration, honestly (`benchmarks/modelled_profiles.py` redoes it; results in
`benchmarks/results/modelled_profiles.md`). The published numbers come from the catalog
(`ReferenceArch.published["latency_ms"]`), 320x320, 90 classes:
  * Edge TPU: two Pixel-4 points, MobileDet-EdgeTPU 6.9 ms and MobileNetV2-SSDLite 6.8 ms
    (MobileNetEdgeTPU-SSDLite, 6.6 ms, is not a registered architecture, so it is not used).
    Two constants are solved exactly from two points (ms_per_gmac, ms_per_mb) with
    `OP_OVERHEAD_MS` fixed, so both are reproduced exactly and there is NO held-out error for
    this fit. A compute-only model cannot fit them: MobileDet-EdgeTPU has 1.9x the MACs yet the
    same latency, which under the 4 TOPS peak needs the memory-traffic term (leave-one-out of
    the one-constant compute-only model: +70% / -40%; memory-only: -18% / +23%).
    `OP_OVERHEAD_MS` is not identifiable from two points; 5 us is an assumption (above ~35 us
    the fitted conv rate would exceed the peak; Coral's "MobileNet V2 at almost 400 FPS", on
    another host and out of sample, is predicted at 2.96-3.07 ms for 0-5 us).
  * DSP: one point, MobileDet-DSP 12.3 ms on a Pixel-4 DSP: one scale is solved from it and
    reproduces it exactly; no validation of any kind is possible.
  * CPU fallback rate: one constant, least squares on two points (-16% / +6%), leave-one-out
    -21% / +26%.
The profiles' calibration is therefore a = 1, b = 0: the constants already are the fit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tdbnas.latency.units import DEFAULT_HEAD, HeadExtra, HeadPredictor, Unit, detector_units
from tdbnas.spaces import ArchSpec, LayerConfig, SSDLiteHead, as_hw
from tdbnas.spaces.primitives import Primitive, layer_primitives, pyramid_part_primitives
from tdbnas.spaces.pyramid_layout import PyramidCell, PyramidDownConv, PyramidLateral, PyramidResample

#: Part of the profiles' runtime version (`modelled-edgetpu-v1`): bump it with any change to a
#: constant or to the structure, so a table never mixes entries of two models.
VERSION = 1

# ---- facts (sourced; see the module docstring) --------------------------------------------
EDGETPU_PEAK_MACS_PER_S = 2e12          # 4 TOPS int8 (coral.ai/docs/edgetpu/faq), 2 ops per MAC
EDGETPU_PARAM_CACHE_BYTES = 7.5 * 2**20  # compiler logs: used + remaining = 7.50 MiB
DEPTHWISE_EFFICIENCY = 1 / 3            # MobileDets §1: regular conv ~3x the utilisation of depthwise
EDGETPU_UNSUPPORTED = frozenset({"hswish"})  # HARD_SWISH: google-coral/edgetpu#272
DSP_DEPTHWISE_KERNELS = (3,)            # tensorflow/lite/delegates/hexagon/README.md: filter width == 3
DSP_UNSUPPORTED = frozenset({"gmax"})  # REDUCE_MAX: not in the Hexagon delegate README's op list
DSP_DEPTH_ALIGN, DSP_WIDTH_ALIGN = 32, 4  # Hexagon NN depth32 layout (XiaoMi/nnlib docs/d32.txt)
DSP_SHALLOW_INPUT = 4                   # an image input (3 channels) takes nnlib's input-supernode path, unpadded
#: Activations TFLite cannot fuse into a conv: each becomes its own element-wise op.
UNFUSED_ACTIVATIONS = {"hswish": "hswish", "sigmoid": "logistic"}

# ---- assumptions (not identifiable from the published data) -------------------------------
OP_OVERHEAD_MS = 0.005  # per-op dispatch; sensitivity in benchmarks/modelled_profiles.py

# ---- fitted constants (benchmarks/modelled_profiles.py redoes each fit; a test checks them) --
#: Edge TPU: solved from MobileDet-EdgeTPU 6.9 ms + MobileNetV2-SSDLite 6.8 ms (Pixel 4).
EDGETPU_MS_PER_GMAC = 1.4642  # regular conv at 0.68 TMAC/s = 34% of the 4 TOPS peak
EDGETPU_MS_PER_MB = 0.15860   # activation traffic at 6.3 GB/s (also used for streaming and transfers)
#: DSP: one scale solved from MobileDet-DSP 12.3 ms (Pixel 4 DSP) alone; the memory term keeps
#: the Edge TPU fit's ratio of per-byte to per-MAC cost (ASSUMED, see the module docstring).
DSP_MS_PER_GMAC = 1.6292      # 0.61 T padded-MAC/s (no published Hexagon 690 peak to compare with)
DSP_MS_PER_MB = DSP_MS_PER_GMAC * EDGETPU_MS_PER_MB / EDGETPU_MS_PER_GMAC
#: CPU fallback: least squares on MobileDet-CPU 113 ms and MobileNetV2-SSDLite 162 ms (Pixel 1).
CPU_MS_PER_GMAC = 213.77     # 4.7 GMAC/s
#: Coral USB Accelerator and Dev Board: bounded least squares on the 6 models of Coral's Table 1
#: the language expresses (`tdbnas.latency.published`, benchmarks/edgetpu_published.py), with a
#: host-CPU cost per 1000 detection anchors that only the published SSD rows carry (tdbnas
#: predicts raw-output detectors: the profiles leave it out). Leave-one-out median |error| of
#: the same fit: CORAL_LOO_MEDIAN_PCT.
CORAL_USB_MS_PER_GMAC, CORAL_USB_MS_PER_MB, CORAL_USB_MS_PER_KANCHOR = 1.2703, 0.13449, 1.0644
CORAL_DEVBOARD_MS_PER_GMAC, CORAL_DEVBOARD_MS_PER_MB, CORAL_DEVBOARD_MS_PER_KANCHOR = 1.6770, 0.12410, 3.7472
CORAL_LOO_MEDIAN_PCT = {"coral-usb": 2.98, "coral-devboard": 13.72}


@dataclass(frozen=True)
class DeviceModel:
    """Coefficients of one device's per-op cost: `compute*ms_per_gmac/1e9 + bytes*ms_per_mb/1e6
    + op_overhead_ms` on the accelerator, CPU rate for ops that fall back."""

    name: str
    ms_per_gmac: float
    ms_per_mb: float
    op_overhead_ms: float
    cpu_ms_per_gmac: float
    transfer_ms_per_mb: float
    single_split: bool       # Edge TPU: everything after the first unsupported op runs on the CPU
    param_cache_bytes: float | None  # parameters beyond it are streamed every inference
    family: str = ""         # whose op table and memory layout it has ("edgetpu", "dsp"); default: its name

    @property
    def chip(self) -> str:
        return self.family or self.name


DEVICES: dict[str, DeviceModel] = {
    "edgetpu": DeviceModel("edgetpu", EDGETPU_MS_PER_GMAC, EDGETPU_MS_PER_MB, OP_OVERHEAD_MS, CPU_MS_PER_GMAC,
                           EDGETPU_MS_PER_MB, True, EDGETPU_PARAM_CACHE_BYTES),
    "dsp": DeviceModel("dsp", DSP_MS_PER_GMAC, DSP_MS_PER_MB, OP_OVERHEAD_MS, CPU_MS_PER_GMAC, EDGETPU_MS_PER_MB,
                       False, None),
    # CPU fallback on the Coral hosts: the Pixel-1 rate again (ASSUMED: no published number).
    "coral-usb": DeviceModel("coral-usb", CORAL_USB_MS_PER_GMAC, CORAL_USB_MS_PER_MB, OP_OVERHEAD_MS, CPU_MS_PER_GMAC,
                             CORAL_USB_MS_PER_MB, True, EDGETPU_PARAM_CACHE_BYTES, "edgetpu"),
    "coral-devboard": DeviceModel("coral-devboard", CORAL_DEVBOARD_MS_PER_GMAC, CORAL_DEVBOARD_MS_PER_MB,
                                  OP_OVERHEAD_MS, CPU_MS_PER_GMAC, CORAL_DEVBOARD_MS_PER_MB, True,
                                  EDGETPU_PARAM_CACHE_BYTES, "edgetpu"),
}


def _coral_profile(device: str, hardware: str, gmac: float, mb: float, kanchor: float) -> dict[str, Any]:
    return {"version": VERSION, "calibration": {"a": 1.0, "b": 0.0}, "hardware": hardware, "peak_tops": 4.0,
            "param_cache_mib": EDGETPU_PARAM_CACHE_BYTES / 2**20, "conv_ms_per_gmac": gmac,
            "activation_ms_per_mb": mb, "depthwise_efficiency": DEPTHWISE_EFFICIENCY, "op_overhead_ms": OP_OVERHEAD_MS,
            "cpu_fallback_ms_per_gmac": CPU_MS_PER_GMAC, "postprocess_ms_per_1000_anchors_not_predicted": kanchor,
            "fitted_on": "6 models of Coral's Edge TPU benchmark Table 1 (MobileNet v1/v2 224, MobileNet v1/v2 SSD, "
                         "EfficientNet-EdgeTpu-S/M; latency/reference/edgetpu_published.md)",
            "leave_one_out_median_error_pct": CORAL_LOO_MEDIAN_PCT[device],
            "note": f"modelled, not measured: leave-one-out median |error| {CORAL_LOO_MEDIAN_PCT[device]:.1f}% over "
                    "6 published models (benchmarks/results/edgetpu_published.md)"}

MODELLED_PROFILES: dict[str, dict[str, Any]] = {
    "edgetpu": {"version": VERSION, "calibration": {"a": 1.0, "b": 0.0},
                "hardware": "Edge TPU of a Pixel 4 (Coral boards: coral-usb, coral-devboard), int8", "peak_tops": 4.0,
                "param_cache_mib": EDGETPU_PARAM_CACHE_BYTES / 2**20,
                "conv_ms_per_gmac": EDGETPU_MS_PER_GMAC, "activation_ms_per_mb": EDGETPU_MS_PER_MB,
                "depthwise_efficiency": DEPTHWISE_EFFICIENCY, "op_overhead_ms": OP_OVERHEAD_MS,
                "cpu_fallback_ms_per_gmac": CPU_MS_PER_GMAC,
                "fitted_on": "MobileDet-EdgeTPU 6.9 ms, MobileNetV2-SSDLite 6.8 ms (Pixel 4 Edge TPU; 2 points, "
                             "2 constants, exact, no held-out error)",
                "note": "modelled, not measured"},
    "dsp": {"version": VERSION, "calibration": {"a": 1.0, "b": 0.0},
            "hardware": "Hexagon 690 DSP (Pixel 4, TFLite Hexagon delegate), int8",
            "conv_ms_per_gmac": DSP_MS_PER_GMAC, "activation_ms_per_mb": DSP_MS_PER_MB,
            "depthwise_efficiency": DEPTHWISE_EFFICIENCY,
            "depth_align": DSP_DEPTH_ALIGN, "width_align": DSP_WIDTH_ALIGN, "op_overhead_ms": OP_OVERHEAD_MS,
            "cpu_fallback_ms_per_gmac": CPU_MS_PER_GMAC,
            "fitted_on": "MobileDet-DSP 12.3 ms (Pixel 4 DSP; 1 point, 1 constant, exact, no validation possible)",
            "note": "modelled, not measured"},
    "coral-usb": _coral_profile("coral-usb", "Coral USB Accelerator (Edge TPU, USB 3.0, desktop host), int8",
                                CORAL_USB_MS_PER_GMAC, CORAL_USB_MS_PER_MB, CORAL_USB_MS_PER_KANCHOR),
    "coral-devboard": _coral_profile("coral-devboard", "Coral Dev Board (Edge TPU), int8", CORAL_DEVBOARD_MS_PER_GMAC,
                                     CORAL_DEVBOARD_MS_PER_MB, CORAL_DEVBOARD_MS_PER_KANCHOR),
}


def device_model(device: str | DeviceModel) -> DeviceModel:
    """A device's model by name (or the model itself: benchmarks evaluate other constants)."""
    if isinstance(device, DeviceModel):
        return device
    if device not in DEVICES:
        raise KeyError(f"no modelled device {device!r} (modelled: {', '.join(sorted(DEVICES))})")
    return DEVICES[device]


# ---- units as ops ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=65536)
def unit_ops(unit: Unit) -> tuple[Primitive, ...]:
    """The ops of one unit in execution order, with unfusable activations as their own ops."""
    if isinstance(unit, LayerConfig):
        base = layer_primitives(unit)
    elif isinstance(unit, HeadExtra):
        out_hw = unit.out_hw
        base = [Primitive("conv", "reduce", unit.in_hw, unit.in_channels, unit.mid, act="relu6", bn=True),
                Primitive("dwconv", "depthwise", unit.in_hw, unit.mid, unit.mid, 3, 2, act="relu6", bn=True),
                Primitive("conv", "expand", out_hw, unit.mid, unit.out, act="relu6", bn=True)]
    elif isinstance(unit, HeadPredictor):
        base = [Primitive("dwconv", "depthwise", unit.in_hw, unit.in_channels, unit.in_channels, unit.kernel,
                          act="relu6", bn=True),
                Primitive("conv", "pointwise", unit.in_hw, unit.in_channels, unit.out_channels, bias=True)]
    elif isinstance(unit, (PyramidLateral, PyramidResample, PyramidDownConv, PyramidCell)):
        base = pyramid_part_primitives(unit)
    else:
        raise TypeError(f"not a latency unit: {unit!r}")
    return tuple(with_unfused_activations(base))


def with_unfused_activations(base: Iterable[Primitive]) -> list[Primitive]:
    """`base` with an element-wise op after every op whose activation TFLite cannot fuse."""
    ops: list[Primitive] = []
    for op in base:
        ops.append(op)
        if op.act in UNFUSED_ACTIVATIONS:
            ops.append(Primitive(UNFUSED_ACTIVATIONS[op.act], f"{op.name}_{op.act}", op.out_hw, op.cout, op.cout))
    return ops


def chip(device: str) -> str:
    """The accelerator family of a modelled device name (`coral-usb` -> `edgetpu`)."""
    model = DEVICES.get(device)
    return model.chip if model is not None else device


def is_supported(op: Primitive, device: str) -> bool:
    """Whether `device` runs `op` itself (documented op tables; see the module docstring)."""
    device = chip(device)
    if device == "edgetpu":
        return op.op not in EDGETPU_UNSUPPORTED
    if device == "dsp":
        if op.op in DSP_UNSUPPORTED:
            return False
        return op.op != "dwconv" or op.kernel in DSP_DEPTHWISE_KERNELS
    raise KeyError(f"no modelled device {device!r}")


def _elements(hw: tuple[int, int], channels: int) -> int:
    return hw[0] * hw[1] * channels


def _pad(value: int, align: int) -> int:
    return -(-value // align) * align


def _shapes(op: Primitive, device: str) -> tuple[tuple[int, int], int, tuple[int, int], int]:
    """(input HxW, input channels, output HxW, output channels) as the device stores them: on
    the DSP in depth32 layout (depth padded to 32, width to 4; an image input stays unpadded)."""
    (ih, iw), (oh, ow), cin, cout = op.in_hw, op.out_hw, op.cin, op.cout
    if chip(device) != "dsp":
        return (ih, iw), cin, (oh, ow), cout
    cin = cin if cin <= DSP_SHALLOW_INPUT else _pad(cin, DSP_DEPTH_ALIGN)
    return ((ih, _pad(iw, DSP_WIDTH_ALIGN)), cin, (oh, _pad(ow, DSP_WIDTH_ALIGN)), _pad(cout, DSP_DEPTH_ALIGN))


def compute_macs(op: Primitive, device: str) -> float:
    """Regular-conv-equivalent MACs: depthwise and element-wise work (one MAC per element of the
    larger of input and output: a resize writes more than it reads) divided by
    DEPTHWISE_EFFICIENCY; on the DSP counted on depth32-padded shapes."""
    in_hw, cin, (oh, ow), cout = _shapes(op, device)
    k = op.kernel
    if op.op == "conv":
        return float(oh * ow * k * k * cin * cout)
    if op.op == "dwconv":
        return oh * ow * k * k * cout / DEPTHWISE_EFFICIENCY
    return max(_elements(in_hw, cin), _elements((oh, ow), cout)) / DEPTHWISE_EFFICIENCY


def activation_bytes(op: Primitive, device: str) -> int:
    """int8 activations read and written, as stored on the device (a residual add reads two)."""
    in_hw, cin, out_hw, cout = _shapes(op, device)
    written = _elements(out_hw, cout)
    return _elements(in_hw, cin) + written + (written if op.op == "add" else 0)


def param_bytes(op: Primitive) -> int:
    """int8 weights plus an int32 bias per output channel (BN folds into a bias)."""
    return op.weights + 4 * op.cout if op.op in ("conv", "dwconv") else 0


def accelerator_ms(op: Primitive, model: DeviceModel) -> float:
    return (compute_macs(op, model.name) * model.ms_per_gmac / 1e9
            + activation_bytes(op, model.name) * model.ms_per_mb / 1e6 + model.op_overhead_ms)


def cpu_ms(op: Primitive, model: DeviceModel) -> float:
    """The op on the CPU: real MACs at the CPU rate (no depthwise penalty) plus the dispatch."""
    return op.madds * model.cpu_ms_per_gmac / 1e9 + model.op_overhead_ms


def transfer_ms(op: Primitive, model: DeviceModel) -> float:
    """Moving an op's input and output between accelerator and CPU memory."""
    return (_elements(op.in_hw, op.cin) + _elements(op.out_hw, op.cout)) * model.transfer_ms_per_mb / 1e6


def op_ms(op: Primitive, device: str | DeviceModel) -> float:
    """One op's modelled time on its own: on the accelerator, or on the CPU with its transfers
    when the device does not support it."""
    model = device_model(device)
    if is_supported(op, model.name):
        return accelerator_ms(op, model)
    return cpu_ms(op, model) + transfer_ms(op, model)


def unit_ms(unit: Unit, device: str | DeviceModel) -> float:
    return math.fsum(op_ms(op, device) for op in unit_ops(unit))


@functools.lru_cache(maxsize=262144)
def modelled_unit_ms(unit: Unit, device: str) -> float:
    """The entry `fill_modelled` stores for `unit`: the sum of its ops (`op_ms`)."""
    return unit_ms(unit, device_model(device))


# ---- whole-model terms ----------------------------------------------------------------------
@dataclass(frozen=True)
class WholeModel:
    """What no per-unit entry can hold. `fallback_ms` converts every accelerated op after the
    first unsupported one to CPU time (Edge TPU single split); `streaming_ms` reads the
    parameter bytes beyond the cache once per inference."""

    param_bytes: int         # parameters of the ops that run on the accelerator
    streamed_bytes: float
    streaming_ms: float
    first_cpu_op: str | None  # "unit key / op name" where the CPU part starts, if any
    fallback_ms: float

    @property
    def total_ms(self) -> float:
        return self.streaming_ms + self.fallback_ms


def whole_model(units: Sequence[Unit], device: str | DeviceModel) -> WholeModel:
    """Whole-model terms of a detector given its units in execution order."""
    model = device_model(device)
    accelerated_params, fallback, first = 0, 0.0, None
    for unit in units:
        for op in unit_ops(unit):
            supported = is_supported(op, model.name)
            if first is None and model.single_split and not supported:
                first = f"{unit.key} / {op.name}"  # its entry holds its CPU time and the transfer
                continue
            if first is None or not model.single_split:
                accelerated_params += param_bytes(op) if supported else 0
            elif supported:  # after the split: on the CPU although the device could run it
                fallback += cpu_ms(op, model) - accelerator_ms(op, model)
            else:  # already on the CPU: no transfer, which its entry charges
                fallback -= transfer_ms(op, model)
    streamed = 0.0
    if model.param_cache_bytes is not None:
        streamed = max(0.0, accelerated_params - model.param_cache_bytes)
    return WholeModel(accelerated_params, streamed, streamed * model.ms_per_mb / 1e6, first, fallback)


@functools.lru_cache(maxsize=65536)
def _whole_model_cached(arch: ArchSpec, hw: tuple[int, int], head: SSDLiteHead, width_multiplier: float,
                        device: str) -> WholeModel:
    return whole_model(detector_units(arch, hw, head=head, width_multiplier=width_multiplier), device)


#: unit key -> (parameter bytes of its accelerated ops, has an unsupported op), per device.
_UNIT_SUMMARY: dict[tuple[str, str], tuple[int, bool]] = {}


def whole_model_ms(arch: ArchSpec, resolution: int | Sequence[int], head: SSDLiteHead = DEFAULT_HEAD,
                   width_multiplier: float = 1.0, *, device: str) -> float:
    """The term `LatencyPredictor` adds to the unit sum of a modelled profile (before calibration).

    Search scores thousands of candidates: from the unit keys alone (cached by the predictor)
    and a per-unit summary, the common case (no unsupported op, parameters within the cache)
    needs no walk over the ops."""
    from tdbnas.latency.predictor import unit_keys

    model, hw, wm = device_model(device), as_hw(resolution), float(width_multiplier)
    if not model.single_split and model.param_cache_bytes is None:
        return 0.0
    keys = unit_keys(arch, hw, head, wm)
    summaries = [_UNIT_SUMMARY.get((key, device)) for key in keys]
    if any(summary is None for summary in summaries):
        for unit in detector_units(arch, hw, head=head, width_multiplier=wm):
            ops = unit_ops(unit)
            _UNIT_SUMMARY[(unit.key, device)] = (sum(param_bytes(op) for op in ops if is_supported(op, device)),
                                                 not all(is_supported(op, device) for op in ops))
        summaries = [_UNIT_SUMMARY[(key, device)] for key in keys]
    if model.single_split and any(unsupported for _, unsupported in summaries):
        return _whole_model_cached(arch, hw, head, wm, device).total_ms
    params = sum(size for size, _ in summaries)
    if model.param_cache_bytes is None or params <= model.param_cache_bytes:
        return 0.0
    return (params - model.param_cache_bytes) * model.ms_per_mb / 1e6


@dataclass(frozen=True)
class ModelledLatency:
    units_ms: float
    whole: WholeModel
    calibration: tuple[float, float]

    @property
    def total_ms(self) -> float:
        a, b = self.calibration
        return a * (self.units_ms + self.whole.total_ms) + b


def modelled_detector_ms(arch: ArchSpec, resolution: int | Sequence[int], device: str | DeviceModel, *,
                         head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> ModelledLatency:
    """A detector's modelled latency without a table: what a filled profile predicts. With a
    `DeviceModel` instead of a name, its constants are used and the calibration is (1, 0)."""
    hw, wm = as_hw(resolution), float(width_multiplier)
    units = detector_units(arch, hw, head=head, width_multiplier=wm)
    if isinstance(device, DeviceModel):
        return ModelledLatency(math.fsum(unit_ms(u, device) for u in units), whole_model(units, device), (1.0, 0.0))
    cal = MODELLED_PROFILES[device].get("calibration") or {"a": 1.0, "b": 0.0}
    return ModelledLatency(math.fsum(modelled_unit_ms(u, device) for u in units),
                           _whole_model_cached(arch, hw, head, wm, device), (float(cal["a"]), float(cal["b"])))


# ---- calibration ----------------------------------------------------------------------------
#: Published keys of `ReferenceArch.published["latency_ms"]` each fit uses.
PUBLISHED_KEYS = {"edgetpu": "pixel4_edgetpu", "dsp": "pixel4_dsp", "cpu": "pixel1_cpu"}
CALIBRATION_RESOLUTION = 320  # every published MobileDet / SSDLite number is at 320x320, 90 classes


def published_points(key: str) -> list[tuple[str, ArchSpec, float]]:
    """(name, arch, ms) of every registered reference with a published latency under `key`."""
    from tdbnas.spaces import ARCHS

    points = []
    for name in ARCHS.names():
        ref = ARCHS.get(name)
        value = ref.published.get("latency_ms", {}).get(key)
        if value is not None:
            points.append((name, ref.arch, float(value)))
    return points


def detector_terms(arch: ArchSpec, device: str, resolution: int = CALIBRATION_RESOLUTION) -> tuple[float, float, int]:
    """(compute MACs, activation bytes, ops) summed over a detector: the linear features of the fit."""
    compute = moved = count = 0
    for unit in detector_units(arch, resolution):
        for op in unit_ops(unit):
            if not is_supported(op, device):
                raise ValueError(f"{unit.key} has an op {device} does not run; the linear fit needs fully "
                                 "accelerated calibration models")
            compute += compute_macs(op, device)
            moved += activation_bytes(op, device)
            count += 1
    return compute, moved, count


def fit_edgetpu(op_overhead_ms: float = OP_OVERHEAD_MS) -> dict[str, float]:
    """Solve (ms_per_gmac, ms_per_mb) so the published Pixel-4 Edge TPU points are reproduced."""
    import numpy as np

    points = published_points(PUBLISHED_KEYS["edgetpu"])
    if len(points) < 2:
        raise ValueError(f"the Edge TPU fit needs two published points, the catalog has {len(points)}")
    rows, rhs = [], []
    for _, arch, ms in points:
        compute, moved, count = detector_terms(arch, "edgetpu")
        rows.append([compute / 1e9, moved / 1e6])
        rhs.append(ms - count * op_overhead_ms)
    (gmac, mb), *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return {"ms_per_gmac": float(gmac), "ms_per_mb": float(mb), "op_overhead_ms": op_overhead_ms,
            "conv_fraction_of_peak": 1e12 / float(gmac) / EDGETPU_PEAK_MACS_PER_S}


def fit_dsp(op_overhead_ms: float = OP_OVERHEAD_MS, memory_per_compute: float | None = None) -> dict[str, float]:
    """Solve the DSP's one scale from the published Pixel-4 DSP point(s) (least squares if
    several): `ms_per_gmac`, with `ms_per_mb = memory_per_compute * ms_per_gmac` (default: the
    Edge TPU constants' ratio)."""
    ratio = EDGETPU_MS_PER_MB / EDGETPU_MS_PER_GMAC if memory_per_compute is None else memory_per_compute
    points = published_points(PUBLISHED_KEYS["dsp"])
    if not points:
        raise ValueError("the DSP fit needs a published point; the catalog has none")
    num = den = 0.0
    for _, arch, ms in points:
        compute, moved, count = detector_terms(arch, "dsp")
        feature = compute / 1e9 + ratio * moved / 1e6
        num += feature * (ms - count * op_overhead_ms)
        den += feature**2
    return {"ms_per_gmac": num / den, "ms_per_mb": ratio * num / den, "op_overhead_ms": op_overhead_ms}


def fit_cpu(points: Iterable[tuple[str, ArchSpec, float]] | None = None) -> dict[str, float]:
    """Least-squares CPU rate (through the origin) on published CPU latencies: ms = MACs * rate."""
    pairs = []
    for _, arch, ms in (published_points(PUBLISHED_KEYS["cpu"]) if points is None else points):
        macs = sum(op.madds for unit in detector_units(arch, CALIBRATION_RESOLUTION) for op in unit_ops(unit))
        pairs.append((macs / 1e9, ms))
    if not pairs:
        raise ValueError("the CPU fallback fit needs at least one published CPU latency")
    return {"ms_per_gmac": sum(g * ms for g, ms in pairs) / sum(g * g for g, _ in pairs)}
