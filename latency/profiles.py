"""Device profiles and the "first use" behaviour.

    cpu       measured: this machine's CPU (LiteRT int8, XNNPACK), profiled the first time a
              prediction needs a unit and cached in the user's table
    edgetpu   modelled: per-unit analytic model of a Coral / Pixel Edge TPU (`latency/modelled.py`)
    dsp       modelled: per-unit analytic model of a Hexagon DSP (`latency/modelled.py`)

Modelled numbers are stored in the table like measured ones, under a profile of kind
"modelled", so prediction, export and search treat both alike; every output names the kind.

The default table is `~/.cache/tdbnas/latency.sqlite`; `TDBNAS_CACHE` moves the whole cache
folder (table and micro-models).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdbnas.latency.predictor import LatencyPredictor
from tdbnas.latency.table import Calibration, Entry, LatencyTable, now
from tdbnas.latency.units import DEFAULT_HEAD, Unit, space_units, units_of_archs
from tdbnas.spaces import ArchSpec, BlockSpace, PyramidSearchSpace, SearchSpace, SSDLiteHead, as_hw

CACHE_ENV = "TDBNAS_CACHE"


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    kind: str    # "measured" or "modelled"
    device: str  # what `tdbnas profile --device` takes
    description: str


PROFILES: dict[str, ProfileSpec] = {
    "cpu": ProfileSpec("cpu", "measured", "cpu", "this machine's CPU: LiteRT int8 with XNNPACK, measured on first use"),
    "edgetpu": ProfileSpec("edgetpu", "modelled", "edgetpu", "Edge TPU: per-unit analytic model (not measured)"),
    "dsp": ProfileSpec("dsp", "modelled", "dsp", "Hexagon DSP: per-unit analytic model (not measured)"),
    "coral-usb": ProfileSpec("coral-usb", "modelled", "coral-usb",
                             "Coral USB Accelerator: Edge TPU model fitted to Coral's published table (not measured)"),
    "coral-devboard": ProfileSpec("coral-devboard", "modelled", "coral-devboard",
                                  "Coral Dev Board: Edge TPU model fitted to Coral's published table (not measured)"),
}
MEASURED_DEVICES = ("cpu",)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tdbnas")


def default_table_path() -> Path:
    return cache_dir() / "latency.sqlite"


def micromodel_cache() -> Path:
    return cache_dir() / "micromodels"


def default_table() -> LatencyTable:
    return LatencyTable(default_table_path())


def open_table(path: str | os.PathLike[str] | None = None) -> LatencyTable:
    """The table at `path`, else the default one in the cache."""
    return LatencyTable(path) if path else default_table()


def profile_spec(name: str) -> ProfileSpec | None:
    return PROFILES.get(name)


def modelled_devices() -> tuple[str, ...]:
    return tuple(name for name, spec in PROFILES.items() if spec.kind == "modelled")


# ---- modelled profiles -----------------------------------------------------------------------
def _modelled_info(device: str) -> Mapping[str, Any]:
    from tdbnas.latency import modelled

    profiles = getattr(modelled, "MODELLED_PROFILES", {})
    if device not in profiles:
        raise KeyError(f"no modelled profile {device!r} (modelled: {', '.join(sorted(profiles)) or 'none'})")
    info = profiles[device]
    return info if isinstance(info, Mapping) else vars(info)


def modelled_runtime_version(device: str) -> str:
    """`modelled-<device>-v<model version>`: a new analytic model gets new entries, not mixed ones."""
    info = _modelled_info(device)
    return f"modelled-{device}-v{info.get('version', 1)}"


def _modelled_calibration(device: str, runtime_version: str) -> Calibration | None:
    raw = _modelled_info(device).get("calibration")
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        a, b = float(raw.get("a", 1.0)), float(raw.get("b", 0.0))
    elif isinstance(raw, Sequence):
        a, b = float(raw[0]), float(raw[1])
    else:
        a, b = float(raw.a), float(raw.b)
    return Calibration(a, b, runtime_version, (), now(), f"from tdbnas.latency.modelled ({device})")


def fill_modelled(table: LatencyTable, device: str, units: Iterable[Unit], *, profile: str | None = None) -> int:
    """Store the analytic model's number for every unit the profile lacks; returns how many."""
    from tdbnas.latency.modelled import modelled_unit_ms

    profile = profile or device
    version = modelled_runtime_version(device)
    info = _modelled_info(device)
    environment = {"device": device, "model": "tdbnas.latency.modelled", "runtime_version": version,
                   **{k: v for k, v in info.items() if k != "calibration" and _jsonable(v)}}
    table.ensure_profile(profile, kind="modelled", runner="modelled", environment=environment)
    by_key = {unit.key: unit for unit in units}
    todo = table.missing(profile, by_key, version)
    stamp = now()
    written = table.put_many((Entry(profile, version, key, float(modelled_unit_ms(by_key[key], device)),
                                    "modelled", None, (), {"device": device}, stamp) for key in todo), replace=False)
    if table.profile(profile).calibration is None:
        calibration = _modelled_calibration(device, version)
        if calibration is not None:
            table.set_calibration(profile, calibration)
    return written


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


# ---- runners ---------------------------------------------------------------------------------
def make_runner(kind: str = "local", *, threads: int = 1, **options: Any):
    """A runner by name: `local` (this machine's LiteRT interpreter), `adb`, `ssh`."""
    from tdbnas.latency.runners.base import RunnerUnavailable

    modules = {"local": ("local", "LocalRunner"), "adb": ("adb", "AdbRunner"), "ssh": ("ssh", "SshRunner")}
    if kind not in modules:
        raise ValueError(f"unknown runner {kind!r} ({', '.join(modules)})")
    module_name, class_name = modules[kind]
    try:
        module = importlib.import_module(f"tdbnas.latency.runners.{module_name}")
    except ImportError as exc:
        raise RunnerUnavailable(f"the {kind} runner cannot be loaded ({exc}); the local runner needs the export "
                                "extra: pip install 'tdbnas[export]'") from None
    return getattr(module, class_name)(threads=threads, **options)


def measured_name(device: str) -> str:
    """The profile a real accelerator is measured into (`edgetpu-measured`); once it exists,
    `get_predictor("edgetpu")` uses it instead of the modelled profile."""
    return f"{device}-measured"


def default_profile_name(device: str, threads: int = 1) -> str:
    """`cpu` for the default single thread; `cpu-t4` for four (different numbers, different profile)."""
    return device if threads == 1 else f"{device}-t{threads}"


# ---- first use -------------------------------------------------------------------------------
def units_for(resolution: int | Sequence[int], *, space: SearchSpace | None = None,
              archs: Sequence[ArchSpec] = (), head: SSDLiteHead = DEFAULT_HEAD,
              width_multiplier: float = 1.0) -> frozenset[Unit]:
    """Units of a whole space (when it can be enumerated) plus those of some architectures."""
    units: set[Unit] = set()
    if space is not None:
        if isinstance(space, (BlockSpace, PyramidSearchSpace)):
            units |= space_units(space, resolution, head=head, width_multiplier=width_multiplier)
        else:
            raise TypeError(f"space {space.name!r} cannot enumerate its units; pass archs= instead")
    units |= units_of_archs(archs, resolution, head=head, width_multiplier=width_multiplier)
    return frozenset(units)


def get_predictor(name: str, resolution: int | Sequence[int], *, space: SearchSpace | None = None,
                  archs: Sequence[ArchSpec] = (), table: LatencyTable | None = None,
                  head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0, runner: Any = None,
                  protocol: Any = None, progress: bool = True, threads: int = 1) -> LatencyPredictor:
    """A predictor for profile `name` that covers `space` and/or `archs` at `resolution`.

    Built-in profiles fill their gaps first: `cpu` profiles the missing units on this machine
    (minutes for a whole space the first time, nothing afterwards), modelled ones evaluate
    the analytic model. Any other profile name must already be in the table.
    """
    table = table if table is not None else default_table()
    hw = as_hw(resolution)
    spec = PROFILES.get(name)
    needed = units_for(hw, space=space, archs=archs, head=head, width_multiplier=width_multiplier)
    if spec is not None and spec.kind == "modelled" and table.count(measured_name(name)) > 0:
        return LatencyPredictor(table, measured_name(name))  # measured on the real device: it wins
    if spec is not None and spec.kind == "modelled":
        fill_modelled(table, spec.device, needed, profile=name)
        return LatencyPredictor(table, name)
    if spec is not None and needed:
        from tdbnas.latency.profiling import profile_units, runtime_version_of

        own_runner = runner is None
        runner = runner if runner is not None else make_runner("local", threads=threads)
        try:
            version = runtime_version_of(runner.environment())
            if table.missing(name, (u.key for u in needed), version):
                profile_units(needed, table=table, profile=name, runner=runner, protocol=protocol,
                              cache_dir=micromodel_cache(), progress=progress, device=spec.device)
        finally:
            if own_runner:
                runner.close()
        return LatencyPredictor(table, name, runtime_version=version)
    return LatencyPredictor(table, name)
