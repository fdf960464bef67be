"""Profiling: measure every unit a table lacks, one committed entry at a time; and time whole
detectors end to end for calibration.

Resumable by construction: the keys already in the table are skipped, and each measurement
is committed the moment it is taken, so a killed run (Ctrl-C, OOM, a phone that went to
sleep) loses at most the unit in flight and the next run continues where it stopped. Keys
another process committed meanwhile are skipped too, so several processes can share a table.

Micro-models come from `tdbnas.latency.micromodels` (built with export's lowering, cached on
disk) and are timed with `tdbnas.latency.measure`'s protocol; both are imported on use, since
they need TensorFlow / LiteRT and this module must import without them.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdbnas.latency.table import LatencyTable
from tdbnas.latency.units import DEFAULT_HEAD, Unit
from tdbnas.spaces import ArchSpec, SSDLiteHead, as_hw

#: Environment fields that change what a latency means: entries measured under different values
#: must not share a profile (a 4-thread number is not a 1-thread number).
IDENTITY_FIELDS = ("device", "runner", "threads", "num_threads", "delegate", "cpu", "cpu_model", "machine",
                   "model", "serial", "host")
#: Units built per call to the micro-model builder: small, so a kill during a build wastes little,
#: large enough to amortise the converter's start-up.
BUILD_CHUNK = 16


@dataclass(frozen=True)
class ProfilingReport:
    profile: str
    runtime_version: str
    requested: int       # distinct keys asked for
    already: int         # present before this run (skipped)
    measured: int        # measured and committed by this run
    seconds: float
    build_seconds: float
    measure_seconds: float

    def summary(self) -> str:
        return (f"profile {self.profile!r} (runtime {self.runtime_version}): {self.requested} units, "
                f"{self.already} already in the table, {self.measured} measured in {self.seconds:.1f} s "
                f"(build {self.build_seconds:.1f} s, timing {self.measure_seconds:.1f} s)")


@dataclass(frozen=True)
class DetectorMeasurement:
    """One full int8 detector timed end to end with the same runner and protocol as the units."""

    arch: ArchSpec
    resolution: tuple[int, int]
    value_ms: float
    statistic: str
    spread: float | None
    samples: tuple[float, ...]
    key: str


def runtime_version_of(environment: Mapping[str, Any]) -> str:
    """The runtime a runner reports (e.g. `ai-edge-litert 1.4.0 xnnpack`): part of every table key,
    because two builds of one runtime can differ by 1.5x."""
    for name in ("runtime_version", "runtime"):
        value = environment.get(name)
        if isinstance(value, str) and value:
            version = environment.get("version") if name == "runtime" else None
            return f"{value} {version}" if version else value
    raise ValueError(f"the runner's environment does not name its runtime version (fields: "
                     f"{', '.join(sorted(environment)) or 'none'}); a table entry needs one")


def identity(environment: Mapping[str, Any]) -> dict[str, Any]:
    return {name: environment[name] for name in IDENTITY_FIELDS if name in environment}


def check_compatible(table: LatencyTable, profile: str, environment: Mapping[str, Any]) -> None:
    """Refuse to add measurements taken under another device/thread/delegate setting to a profile."""
    stored, current = identity(table.profile(profile).environment), identity(environment)
    differ = {k: (stored[k], current[k]) for k in stored.keys() & current.keys() if stored[k] != current[k]}
    if differ:
        what = "; ".join(f"{k}: profile has {a!r}, this run {b!r}" for k, (a, b) in sorted(differ.items()))
        raise ValueError(f"profile {profile!r} in {table.path} was measured in another setting ({what}); "
                         "use another --profile name for this setting")


def _open_profile(table: LatencyTable, profile: str, runner: Any, device: str | None) -> tuple[dict, str]:
    environment = dict(runner.environment())
    if device is not None:
        environment.setdefault("device", device)
    environment.setdefault("runner", runner.name)
    version = runtime_version_of(environment)
    if table.has_profile(profile):
        check_compatible(table, profile, environment)
    table.ensure_profile(profile, kind="measured", runner=runner.name, environment=environment)
    return environment, version


def _import(module: str, name: str) -> Any:
    """`module.name`, or a one-line error saying what to install (these need TensorFlow/LiteRT)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise RuntimeError(f"profiling needs {module}.{name}, which cannot be loaded ({exc}); "
                           "install the export extra: pip install 'tdbnas[export]'") from None


def _default_builder() -> Callable[..., Mapping[str, Any]]:
    return _import("tdbnas.latency.micromodels", "build_micromodels")


def _default_measurer() -> Callable[..., Any]:
    return _import("tdbnas.latency.measure", "measure")


def _default_protocol() -> Any:
    return _import("tdbnas.latency.measure", "MeasureProtocol")()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="op", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def profile_units(units: Iterable[Unit], *, table: LatencyTable, profile: str, runner: Any, protocol: Any = None,
                  cache_dir: str | Path, progress: bool = True, device: str | None = None,
                  builder: Callable[..., Mapping[str, Any]] | None = None,
                  measurer: Callable[..., Any] | None = None) -> ProfilingReport:
    """Measure the units whose keys `table` lacks for `profile` and commit each as it is taken.

    `runner` is a `tdbnas.latency.runners.Runner`; `protocol` a `MeasureProtocol` (default
    settings if None). `builder(units, cache_dir)` and `measurer(runner, path, protocol,
    signature=...)` default to the micro-model builder and the measurement protocol.
    """
    start = time.perf_counter()
    environment, version = _open_profile(table, profile, runner, device)
    by_key: dict[str, Unit] = {}
    for unit in units:
        by_key.setdefault(unit.key, unit)
    todo = table.missing(profile, by_key, version)
    already = len(by_key) - len(todo)
    if not todo:
        return ProfilingReport(profile, version, len(by_key), already, 0, time.perf_counter() - start, 0.0, 0.0)
    build = builder or _default_builder()
    timer = measurer or _default_measurer()
    if protocol is None and measurer is None:
        protocol = _default_protocol()
    measured, build_s, measure_s = 0, 0.0, 0.0
    cache = Path(cache_dir)
    with _progress(len(todo), f"profiling {profile}", progress) as bar:
        for begin in range(0, len(todo), BUILD_CHUNK):
            # Another process sharing the table may have measured some of these meanwhile.
            chunk = table.missing(profile, todo[begin:begin + BUILD_CHUNK], version)
            bar.update(len(todo[begin:begin + BUILD_CHUNK]) - len(chunk))
            if not chunk:
                continue
            bar.set_postfix_str(f"building {len(chunk)} micro-models")
            t0 = time.perf_counter()
            models = build([by_key[key] for key in chunk], cache)
            build_s += time.perf_counter() - t0
            for key in chunk:
                bar.set_postfix_str(key)
                if key not in models:
                    raise RuntimeError(f"the micro-model builder returned no model for {key!r}")
                model = models[key]
                t0 = time.perf_counter()
                result = timer(runner, Path(model.path), protocol, signature=getattr(model, "signature", None))
                measure_s += time.perf_counter() - t0
                table.put(profile, version, key, result.value_ms, statistic=result.statistic, spread=result.spread,
                          samples=result.samples_ms, environment={**environment, **dict(result.environment or {})})
                measured += 1
                bar.update(1)
    return ProfilingReport(profile, version, len(by_key), already, measured, time.perf_counter() - start,
                           build_s, measure_s)


def detector_key(arch: ArchSpec, resolution: int | Sequence[int], head: SSDLiteHead = DEFAULT_HEAD,
                 width_multiplier: float = 1.0) -> str:
    """Table key of a whole detector's end-to-end time: `detector@320x320:c90:m1:l2:<arch>`.

    Kept beside the op entries so calibration measurements survive a kill too; a non-default
    head beyond the class count adds a short hash of its settings. `l<n>` is the Keras lowering
    version (`micromodels.LOWERING_VERSION`): a detector built by another lowering is another
    model, and its timing is never reused."""
    from tdbnas.latency.micromodels import LOWERING_VERSION

    hw = as_hw(resolution)
    extra = ""
    if head != SSDLiteHead(num_classes=head.num_classes):
        extra = ":h" + hashlib.sha1(repr(head).encode()).hexdigest()[:8]
    return (f"detector@{hw[0]}x{hw[1]}:c{head.num_classes}:m{width_multiplier:g}{extra}:l{LOWERING_VERSION}:"
            f"{arch.encode()}")


def detector_model_path(cache_dir: str | Path, key: str) -> Path:
    """Where `measure_detectors` keeps the int8 model it timed for a `detector_key`."""
    return Path(cache_dir) / "detectors" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.tflite"


def is_detector_key(key: str) -> bool:
    return key.startswith("detector@")


def _default_detector_builder() -> Callable[..., Any]:
    return _import("tdbnas.latency.micromodels", "build_detector_tflite")


def measure_detectors(archs: Sequence[ArchSpec], resolution: int | Sequence[int], *, table: LatencyTable,
                      profile: str, runner: Any, protocol: Any = None, cache_dir: str | Path,
                      head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0, progress: bool = True,
                      device: str | None = None, builder: Callable[..., Any] | None = None,
                      measurer: Callable[..., Any] | None = None) -> list[DetectorMeasurement]:
    """Time full int8 detectors end to end (for calibration and accuracy checks).

    Each result is committed under `detector_key(...)` in the profile, so a rerun re-uses it.
    """
    hw = as_hw(resolution)
    environment, version = _open_profile(table, profile, runner, device)
    results = []
    build = timer = None
    with _progress(len(archs), f"detectors on {profile}", progress) as bar:
        for arch in archs:
            key = detector_key(arch, hw, head, width_multiplier)
            entry = table.get(profile, key, version)
            if entry is None:
                bar.set_postfix_str(f"building {arch.encode()[:40]}...")
                build = build or builder or _default_detector_builder()
                timer = timer or measurer or _default_measurer()
                if protocol is None and measurer is None:
                    protocol = _default_protocol()
                path = detector_model_path(cache_dir, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    # Build beside, then rename: a kill mid-build must not leave a truncated model.
                    partial = path.with_suffix(".partial.tflite")
                    build(arch, hw, partial, head=head, width_multiplier=width_multiplier)
                    partial.replace(path)
                bar.set_postfix_str(f"timing {arch.encode()[:40]}...")
                result = timer(runner, path, protocol, signature=None)
                entry = table.put(profile, version, key, result.value_ms, statistic=result.statistic,
                                  spread=result.spread, samples=result.samples_ms,
                                  environment={**environment, **dict(result.environment or {})})
            results.append(DetectorMeasurement(arch, hw, entry.value_ms, entry.statistic, entry.spread,
                                               entry.samples, key))
            bar.update(1)
    return results
