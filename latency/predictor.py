"""Latency prediction from a lookup table: the sum of a detector's unit entries, calibrated.

    predicted = a * sum(entries of the detector's units) + b

The units are those of `tdbnas.latency.units.detector_units` (backbone layers, SSDLite extra
layers and predictors). Per-op micro-models cannot see what only a whole model has (input
quantisation, the box/class concatenation and post-processing, the interpreter's per-invoke
cost, cache effects between layers); `a` and `b` absorb them, fitted by least squares on a few
end-to-end measurements of full detectors and stored with the profile (`calibrate`).
Profiles filled by `tdbnas.latency.modelled` add its whole-model term (Edge TPU parameter
streaming and CPU fallback depend on the whole network, not on one unit) to the sum before
calibration: `a * (sum + whole_model) + b`.

`LatencyPredictor` loads one profile's entries once into a numpy vector; `predict_many` turns
each architecture into an index array and sums them all with one `np.add.reduceat`, so search
can score many candidates at once. A missing entry is an error that lists the keys and the
exact `tdbnas profile` command that measures them: a silent zero would make every unprofiled
network look fast.
"""

from __future__ import annotations

import functools
import importlib
import math
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tdbnas.latency.table import Calibration, CalibrationPoint, LatencyTable, now
from tdbnas.latency.units import DEFAULT_HEAD, detector_units, head_units
from tdbnas.spaces import ArchSpec, Skip, SSDLiteHead, as_hw
from tdbnas.spaces.channels import same_output_size

#: How many missing keys an error message spells out before "... and N more".
SHOWN_MISSING = 8


class MissingEntriesError(KeyError, ValueError):
    """The table lacks entries a prediction needs; `keys` lists them all."""

    def __init__(self, message: str, keys: Sequence[str]):
        super().__init__(message)
        self.keys = tuple(keys)

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Prediction:
    """One detector's predicted latency with its per-unit breakdown (table values, uncalibrated)."""

    arch: str
    resolution: tuple[int, int]
    total_ms: float
    raw_sum_ms: float
    per_unit: tuple[tuple[str, float], ...]
    profile: str
    kind: str  # "measured" or "modelled": say which in every output
    runtime_version: str
    calibration: tuple[float, float] | None  # (a, b) applied, None if uncalibrated
    #: Whole-model terms of a modelled profile (Edge TPU parameter streaming, CPU fallback after
    #: the first unsupported op) that no per-unit entry can hold; calibrated with the sum.
    whole_model_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "resolution": list(self.resolution), "total_ms": self.total_ms,
                "raw_sum_ms": self.raw_sum_ms, "profile": self.profile, "kind": self.kind,
                "runtime_version": self.runtime_version, "whole_model_ms": self.whole_model_ms,
                "calibration": None if self.calibration is None else {"a": self.calibration[0],
                                                                       "b": self.calibration[1]},
                "per_unit": [{"key": key, "ms": ms} for key, ms in self.per_unit]}


@functools.lru_cache(maxsize=65536)
def unit_keys(arch: ArchSpec, resolution: tuple[int, int], head: SSDLiteHead = DEFAULT_HEAD,
              width_multiplier: float = 1.0) -> tuple[str, ...]:
    """The table keys of one detector, in execution order: `detector_units(...)` keys, computed
    with a single trace (search scores thousands of candidates; tests check the two agree).
    Architectures with a feature pyramid take `detector_units` itself (cached here all the same)."""
    if arch.pyramid is not None:
        units = detector_units(arch, resolution, head=head, width_multiplier=width_multiplier)
        return tuple(unit.key for unit in units)
    configs = arch.trace(resolution, width_multiplier)
    stride, endpoints = 1, {}
    for index, config in enumerate(configs):
        stride *= config.stride
        if stride > 1:
            endpoints[f"C{stride.bit_length() - 1}"] = (index, config.out_channels, stride)
    for name in head.from_features:
        if name not in endpoints:
            arch.feature(name, width_multiplier)  # raises the library's error naming the endpoints
    hw = as_hw(resolution)
    picked = [endpoints[name] for name in head.from_features]
    last = max(index for index, _, _ in picked)
    backbone = [c.key for c in configs[:last + 1] if not isinstance(c.layer, Skip)]
    hws = [(same_output_size(hw[0], s), same_output_size(hw[1], s)) for _, _, s in picked]
    head_keys = [u.key for u in head_units(head, [c for _, c, _ in picked], hws, width_multiplier)]
    return (*backbone, *head_keys)


def whole_model_term(kind: str, environment: dict[str, Any]) -> Callable[..., float] | None:
    """`(arch, resolution, head, width_multiplier) -> ms` for profiles filled by the analytic
    model of `tdbnas.latency.modelled`, whose whole-model effects (Edge TPU parameter streaming,
    CPU fallback) cannot live in per-unit entries; None for every other profile."""
    if kind != "modelled" or environment.get("model") != "tdbnas.latency.modelled":
        return None
    module = importlib.import_module("tdbnas.latency.modelled")
    term = getattr(module, "whole_model_ms", None)
    return None if term is None else functools.partial(term, device=str(environment.get("device")))


#: Smallest ratio of the largest to the smallest calibration sum for which an intercept is fitted.
MIN_SPAN = 1.5


def fit_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float]) -> tuple[float, float]:
    """Least-squares `a, b` with `measured ~ a * raw + b` and `b >= 0`.

    `b` stands for fixed whole-model costs, which cannot be negative; when the unconstrained fit
    says otherwise (noise, too few points), refit through the origin. One point fixes only `a`,
    and so do points bunched in latency (largest sum < `MIN_SPAN` x the smallest): their line's
    intercept is mostly noise, and extrapolating it misprices every detector outside the bunch
    (measured: 6 detectors of 6.2-6.9 ms at 160x160 fitted b = 1.03 ms, and 3.7 ms detectors
    were then predicted 13-16 % slow; their raw sums were within 1 %).
    """
    x, y = np.asarray(raw_ms, dtype=float), np.asarray(measured_ms, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError("calibration needs one or more (sum, measured) pairs of equal length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("calibration sums and measurements must be positive finite milliseconds")
    a, b = float(x @ y / (x @ x)), 0.0
    if len(x) >= 2 and x.max() >= MIN_SPAN * x.min():
        slope, intercept = np.linalg.lstsq(np.stack([x, np.ones_like(x)], axis=1), y, rcond=None)[0]
        if intercept >= 0 and slope > 0:
            a, b = float(slope), float(intercept)
    return a, b


def held_out_errors(raw_ms: Sequence[float], measured_ms: Sequence[float]) -> tuple[float, float] | None:
    """Leave-one-out median relative errors `(fitted a*sum+b, raw sum)` over the points, or None
    with fewer than 3 points (then a held-out fit rests on one point and says nothing).

    On a runtime where unit latencies add up (XNNPACK on a CPU: median error 1.7 % at 320x320),
    a line fitted to a few noisy detectors can be worse than the plain sum; this is the check that
    catches it before the line is stored."""
    x, y = np.asarray(raw_ms, dtype=float), np.asarray(measured_ms, dtype=float)
    if len(x) < 3:
        return None
    fitted = []
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        a, b = fit_calibration(x[rest], y[rest])
        fitted.append(abs(a * x[i] + b - y[i]) / y[i])
    return float(np.median(fitted)), float(np.median(np.abs(x - y) / y))


class LatencyPredictor:
    """Predicts detector latency on one profile of a `LatencyTable`.

    The table is read once, at construction (call `reload` after profiling more units).
    `runtime_version=None` takes the profile's most recently measured runtime version.
    """

    def __init__(self, table: LatencyTable, profile: str, *, runtime_version: str | None = None,
                 calibrated: bool = True):
        self.table = table
        self.profile = profile
        self._requested_version = runtime_version
        self._calibrated = calibrated
        self.reload()

    def reload(self) -> None:
        info = self.table.profile(self.profile)
        self.kind = info.kind
        self.device = str(info.environment.get("device", self.profile))
        self.runtime_version = self.table.resolve_runtime_version(self.profile, self._requested_version)
        values = self.table.values(self.profile, self.runtime_version)
        self._index = {key: i for i, key in enumerate(values)}
        # One extra slot holding NaN: missing keys map to it, so a batch sum with any missing
        # unit is NaN and is found without a Python-level check per key.
        self._values = np.append(np.fromiter(values.values(), dtype=np.float64, count=len(values)), np.nan)
        self._whole_model = whole_model_term(info.kind, info.environment)
        calibration = info.calibration
        usable = calibration is not None and calibration.runtime_version in (None, self.runtime_version)
        self.calibration: Calibration | None = calibration if (usable and self._calibrated) else None

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return (f"LatencyPredictor({self.profile!r}, {self.kind}, runtime {self.runtime_version!r}, "
                f"{len(self)} entries, calibration {self._ab()})")

    def _ab(self) -> tuple[float, float] | None:
        return None if self.calibration is None else (self.calibration.a, self.calibration.b)

    # ---- single architecture -------------------------------------------------------------
    def predict(self, arch: ArchSpec, resolution: int | Sequence[int], *, head: SSDLiteHead = DEFAULT_HEAD,
                width_multiplier: float = 1.0) -> Prediction:
        hw = as_hw(resolution)
        keys = unit_keys(arch, hw, head, width_multiplier)
        self.check(keys, [arch], hw, head, width_multiplier)
        per_unit = tuple((key, float(self._values[self._index[key]])) for key in keys)
        raw = math.fsum(ms for _, ms in per_unit)
        whole = 0.0 if self._whole_model is None else self._whole_model(arch, hw, head, width_multiplier)
        total = raw + whole if self.calibration is None else float(self.calibration.apply(raw + whole))
        return Prediction(arch.encode(), hw, total, raw, per_unit, self.profile, self.kind, self.runtime_version,
                          self._ab(), whole)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [key for key in dict.fromkeys(keys) if key not in self._index]

    def check(self, keys: Iterable[str], archs: Sequence[ArchSpec], resolution: tuple[int, int],
              head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> None:
        """Raise `MissingEntriesError` if any of `keys` has no entry."""
        missing = self.missing(keys)
        if not missing:
            return
        shown = ", ".join(missing[:SHOWN_MISSING])
        more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
        raise MissingEntriesError(
            f"profile {self.profile!r} (runtime {self.runtime_version}) in {self.table.path} has no entry for "
            f"{len(missing)} unit{'s' if len(missing) != 1 else ''}: {shown}{more}. Measure them with: "
            f"{self.profile_command(archs, resolution, head, width_multiplier)}", missing)

    def profile_command(self, archs: Sequence[ArchSpec], resolution: tuple[int, int],
                        head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> str:
        """The `tdbnas profile` command that fills this predictor's gaps for `archs`."""
        res = f"{resolution[0]}" if resolution[0] == resolution[1] else f"{resolution[0]}x{resolution[1]}"
        parts = ["tdbnas", "profile"]
        if len(archs) == 1:
            parts += ["--arch", archs[0].encode()]
        else:
            parts += ["--space", "SPACE"]
        parts += ["--resolution", res, "--device", self.device, "--profile", self.profile,
                  "--table", str(self.table.path)]
        if head.num_classes != DEFAULT_HEAD.num_classes:
            parts += ["--num-classes", str(head.num_classes)]
        if width_multiplier != 1.0:
            parts += ["--width-multiplier", f"{width_multiplier:g}"]
        return " ".join(shlex.quote(p) if p != "SPACE" else p for p in parts)

    # ---- many architectures --------------------------------------------------------------
    def predict_many(self, archs: Sequence[ArchSpec], resolution: int | Sequence[int], *,
                     head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0,
                     calibrated: bool = True) -> np.ndarray:
        """Total latency (ms) of each architecture, as `predict(...).total_ms` would give."""
        hw = as_hw(resolution)
        if len(archs) == 0:
            return np.zeros(0)
        missing_slot = len(self._values) - 1
        get = self._index.get
        index_lists = [unit_keys(arch, hw, head, width_multiplier) for arch in archs]
        lengths = np.fromiter((len(keys) for keys in index_lists), dtype=np.int64, count=len(archs))
        flat = np.fromiter((get(key, missing_slot) for keys in index_lists for key in keys), dtype=np.int64,
                           count=int(lengths.sum()))
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        raw = np.add.reduceat(self._values[flat], offsets)
        if np.isnan(raw).any():
            bad = [arch for arch, value in zip(archs, raw) if np.isnan(value)]
            self.check([k for arch in bad for k in unit_keys(arch, hw, head, width_multiplier)], bad, hw, head,
                       width_multiplier)
        if self._whole_model is not None:
            raw = raw + np.fromiter((self._whole_model(arch, hw, head, width_multiplier) for arch in archs),
                                    dtype=np.float64, count=len(archs))
        if calibrated and self.calibration is not None:
            return self.calibration.apply(raw)
        return raw

    # ---- search constraints --------------------------------------------------------------
    def as_feasibility(self, budget_ms: float, resolution: int | Sequence[int], *,
                       head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> LatencyBudget:
        """A predicate for `SearchSpace.with_feasibility`: predicted latency <= `budget_ms`."""
        return LatencyBudget(self, float(budget_ms), as_hw(resolution), head, width_multiplier)


@dataclass(frozen=True)
class LatencyBudget:
    """`arch -> predicted latency <= budget` on one profile. Combine profiles with `all_budgets`."""

    predictor: LatencyPredictor
    budget_ms: float
    resolution: tuple[int, int]
    head: SSDLiteHead = DEFAULT_HEAD
    width_multiplier: float = 1.0

    def latency(self, arch: ArchSpec) -> float:
        return float(self.predictor.predict_many([arch], self.resolution, head=self.head,
                                                 width_multiplier=self.width_multiplier)[0])

    def __call__(self, arch: ArchSpec) -> bool:
        return self.latency(arch) <= self.budget_ms

    def mask(self, archs: Sequence[ArchSpec]) -> np.ndarray:
        """Vectorised: which of `archs` fit the budget."""
        return self.predictor.predict_many(archs, self.resolution, head=self.head,
                                           width_multiplier=self.width_multiplier) <= self.budget_ms


@dataclass(frozen=True)
class AllBudgets:
    """Feasible on every device at once (e.g. `cpu <= 80 ms` and `edgetpu <= 7 ms`)."""

    budgets: tuple[LatencyBudget, ...]

    def __call__(self, arch: ArchSpec) -> bool:
        return all(budget(arch) for budget in self.budgets)

    def mask(self, archs: Sequence[ArchSpec]) -> np.ndarray:
        result = np.ones(len(archs), dtype=bool)
        for budget in self.budgets:
            result &= budget.mask(archs)
        return result


def all_budgets(*budgets: LatencyBudget) -> AllBudgets:
    if not budgets:
        raise ValueError("all_budgets needs at least one LatencyBudget")
    return AllBudgets(tuple(budgets))


def calibrate(table: LatencyTable, profile: str, measurements: Iterable[tuple[ArchSpec, Any, float]], *,
              runtime_version: str | None = None, head: SSDLiteHead = DEFAULT_HEAD,
              width_multiplier: float = 1.0, note: str = "") -> Calibration:
    """Fit `a * sum + b` to end-to-end measurements `(arch, resolution, measured_ms)` of full
    detectors, store it with the profile, and return it. The sums use the same table entries
    (and runtime version) the predictor will use. With 3 or more detectors the line must beat the
    raw sum on held-out detectors (`held_out_errors`), else the identity is stored; the note
    says which and why."""
    predictor = LatencyPredictor(table, profile, runtime_version=runtime_version, calibrated=False)
    points = []
    for arch, resolution, measured in measurements:
        prediction = predictor.predict(arch, resolution, head=head, width_multiplier=width_multiplier)
        raw = prediction.raw_sum_ms + prediction.whole_model_ms
        points.append(CalibrationPoint(arch.encode(), as_hw(resolution), raw, float(measured)))
    raw, measured = [p.raw_sum_ms for p in points], [p.measured_ms for p in points]
    a, b = fit_calibration(raw, measured)
    errors = held_out_errors(raw, measured)
    if errors is not None:
        fitted_error, raw_error = errors
        verdict = "kept the line" if fitted_error < raw_error else "kept the raw sum (a = 1, b = 0)"
        if fitted_error >= raw_error:
            a, b = 1.0, 0.0
        check = (f"leave-one-out median error: line {100 * fitted_error:.1f} %, raw sum {100 * raw_error:.1f} %: "
                 f"{verdict}")
        note = f"{note}; {check}" if note else check
    calibration = Calibration(a, b, predictor.runtime_version, tuple(points), now(), note)
    table.set_calibration(profile, calibration)
    return calibration
