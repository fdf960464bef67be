"""Validation of a latency predictor: predicted vs measured end-to-end latency of whole detectors.

The units of every detector are profiled first (so the predictor covers them), then each full
int8 detector is built and timed with the same runner and protocol as the units, and compared
with the profile's calibrated prediction. The numbers people quote for predictors (nn-Meter:
share of models within +-10 %; rank correlation for search) are computed here, once, for the
CLI (`tdbnas latency validate`) and the benchmark alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.latency.units import DEFAULT_HEAD
from tdbnas.spaces import ArchSpec, SSDLiteHead


@dataclass(frozen=True)
class Point:
    arch: str
    predicted_ms: float
    measured_ms: float
    raw_sum_ms: float
    spread: float | None

    @property
    def error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


def error_summary(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Median/max absolute relative error, share within +-5/10/15 %, Spearman and Kendall."""
    from scipy.stats import kendalltau, spearmanr

    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    if len(predicted) == 0:
        raise ValueError("no detectors to compare")
    errors = np.abs(predicted - measured) / measured
    summary = {"n": len(errors), "median_abs_error": float(np.median(errors)), "max_abs_error": float(errors.max()),
               "within_5": float(np.mean(errors <= 0.05)), "within_10": float(np.mean(errors <= 0.10)),
               "within_15": float(np.mean(errors <= 0.15))}
    if len(errors) > 2:
        summary["spearman"] = float(spearmanr(predicted, measured).statistic)
        summary["kendall"] = float(kendalltau(predicted, measured).statistic)
    return summary


@dataclass(frozen=True)
class Validation:
    profile: str
    resolution: tuple[int, int]
    points: tuple[Point, ...]

    def summary(self) -> dict[str, float]:
        return error_summary([p.predicted_ms for p in self.points], [p.measured_ms for p in self.points])

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "resolution": list(self.resolution), "summary": self.summary(),
                "points": [asdict(p) for p in self.points]}


def validate(archs: Sequence[ArchSpec], resolution: Sequence[int], *, table, profile: str, runner,
             cache_dir: str | Path, head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0,
             progress: bool = True, device: str = "cpu") -> Validation:
    """Profile the detectors' units, time the detectors end to end, compare with predictions."""
    from tdbnas.latency.predictor import LatencyPredictor
    from tdbnas.latency.profiles import units_for
    from tdbnas.latency.profiling import measure_detectors, profile_units, runtime_version_of

    units = units_for(resolution, archs=archs, head=head, width_multiplier=width_multiplier)
    profile_units(units, table=table, profile=profile, runner=runner, cache_dir=cache_dir, progress=progress,
                  device=device)
    measured = measure_detectors(archs, resolution, table=table, profile=profile, runner=runner,
                                 cache_dir=cache_dir, head=head, width_multiplier=width_multiplier,
                                 progress=progress, device=device)
    predictor = LatencyPredictor(table, profile, runtime_version=runtime_version_of(runner.environment()))
    points = []
    for arch, measurement in zip(archs, measured):
        prediction = predictor.predict(arch, resolution, head=head, width_multiplier=width_multiplier)
        points.append(Point(arch.encode(), prediction.total_ms, measurement.value_ms, prediction.raw_sum_ms,
                            measurement.spread))
    return Validation(profile, tuple(resolution), tuple(points))


def scatter_plot(points: Sequence[Point], path: str | Path, *, title: str = "") -> Path:
    """Predicted vs measured with the identity line and the +-10 % band, written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tdbnas.spaces.atomic import write_bytes_atomic

    measured = np.array([p.measured_ms for p in points])
    predicted = np.array([p.predicted_ms for p in points])
    low, high = 0.9 * min(measured.min(), predicted.min()), 1.1 * max(measured.max(), predicted.max())
    figure, axes = plt.subplots(figsize=(5, 5), dpi=120)
    line = np.array([low, high])
    axes.fill_between(line, 0.9 * line, 1.1 * line, color="tab:green", alpha=0.15, label="+-10 %")
    axes.plot(line, line, color="tab:green", linewidth=1)
    inside = np.abs(predicted - measured) <= 0.1 * measured
    axes.scatter(measured[inside], predicted[inside], s=14, color="tab:blue", label="within +-10 %")
    axes.scatter(measured[~inside], predicted[~inside], s=14, color="tab:red", label="outside")
    axes.set(xlim=(low, high), ylim=(low, high), xlabel="measured (ms)", ylabel="predicted (ms)",
             title=title or "predicted vs measured latency")
    axes.legend(loc="upper left", fontsize=8)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return write_bytes_atomic(path, buffer.getvalue())
