"""The settings of `tdbnas run`: one nested mapping with documented defaults.

Sources, later ones winning: the defaults below, a YAML/JSON file (`--config FILE`, or a
built-in name: `default`, `full`), then command-line flags. Unknown keys are errors that name
the key and list the known ones; the resolved settings are saved in the run directory
(`config.yaml`), so a run can always be reproduced from its own folder.

The defaults are the built-in demo: the synthetic dataset at 160x160, the small `tdb-lite`
space, this machine's CPU and a budget picked from the space itself (`auto`: the median
predicted latency of its members on the device), sized to finish in about 15-20 minutes on a
2-core machine. `full` is the same flow at 320x320 on the `tdb` space with DetNAS-sized search
settings, for real data and real devices.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

from tdbnas.search.signals import DEFAULT_SIGNAL, check_signal

DEFAULTS: dict[str, Any] = {
    "out": "runs/tdbnas",
    "seed": 0,
    "resolution": 160,
    "space": "tdb-lite",
    "data": {
        "root": None,                 # a COCO-format dataset; null: generate the built-in one in <out>/data
        "train_split": "train",
        "val_split": "val",
        "synth": {"num_train": 2000, "num_val": 500, "image_size": 160, "seed": 0},
    },
    "device": {
        "name": "cpu",                # cpu | edgetpu | dsp (modelled unless a delegate reaches real hardware)
        "runner": "local",            # local | adb | ssh
        "threads": 1,
        "delegate": None,             # e.g. libedgetpu.so.1
        "host": None,                 # user@host for --runner ssh
        "serial": None,               # adb serial
        "table": None,                # latency table (default ~/.cache/tdbnas/latency.sqlite)
    },
    "latency": {
        "profile": None,              # a profile of the table to use as is (e.g. one measured over adb)
        "cost_model": None,           # a fitted cost model (`tdbnas latency fit`) as the latency constraint instead
        "budget_ms": "auto",          # a number, or auto: the budget_quantile of the space's predicted latencies
        "budget_quantile": 0.5,
        "calibration_detectors": 3,   # full detectors timed end to end to fit a*sum+b (measured profiles)
    },
    "supernet": {                     # tdbnas.search.supernet_train.SupernetTrainConfig fields; trained only
        "epochs": 20.0,               # for search.signal: supernet (or retrain.init: supernet)
        "max_minutes": 4.0,
        "schedule_minutes": 4.0,
        "batch_size": 16,             # batch 16 / zero-init residual as in the from-scratch recipe
        "lr": 0.6,
        "warmup_epochs": 0.5,
        "random_crop": False,
        "zero_init_residual": True,
        "search_fraction": 0.1,
    },
    "search": {                       # tdbnas.search.settings.SearchSettings fields, plus the signal's
        "signal": DEFAULT_SIGNAL,     # what ranks the candidates (tdbnas.search.signals; measured in
                                      # benchmarks/results/signals.md)
        "algorithm": "evolution",
        "population": 16,
        "parents": 4,
        "mutations": 6,
        "crossovers": 6,
        "generations": 8,
        "recalibration_images": 128,  # supernet signal: BN recalibration and search-split images
        "eval_images": 100,
        "halving": None,              # e.g. {candidates: 4, epochs: [0.5, 1.0], schedule_epochs: 10}: successive
                                      # halving of the best candidates by the first epochs of stand-alone
                                      # training (tdbnas.search.halving). Off: measured, 1-2 epochs rank
                                      # no better than MAdds (benchmarks/results/signals.md)
        "ray": False,                 # false: serial; "local" or an address: Ray
    },
    "retrain": {                      # tdbnas.detection.train.TrainConfig fields, plus init
        "init": "scratch",            # scratch: the measured from-scratch recipe; supernet: fine-tune the child
        "epochs": 40.0,               # an upper bound: the time budget below ends the cosine
        "max_minutes": 12.0,
        "schedule_minutes": 12.0,
        "batch_size": 16,
        "lr": 0.6,
        "warmup_epochs": 0.5,
        "random_crop": False,
        "zero_init_residual": True,
    },
    "export": {
        "precision": "int8",
        "input_type": "int8",
        "calibration_images": 64,
        "verify_images": 200,
        "max_detections": 100,
    },
    # SSDLite head settings (tdbnas.spaces.SSDLiteHead fields) for every stage. At 160x160 the
    # predictors read C3, C4, C5 + 3 extra layers: the grid MobileDets uses at 320x320 (2034
    # anchors); C4/C5 at 160 would start at 10x10, too coarse for 10-px objects (see
    # benchmarks/results/detection_train.md). `full` (320x320) goes back to the MobileDets layout.
    # `auto`: this head with its anchors fitted to the training boxes (tdbnas.detection.head_fit).
    "head": {"from_features": ["C3", "C4", "C5"], "extra_depths": [512, 256, 256]},
    "references": ["mobiledet-edgetpu", "mobiledet-cpu", "mobilenetv2"],  # drawn on the plots for comparison
}

BUILTIN = ("default", "full", "smoke")


#: Sections passed on to a dataclass that checks its own keys (SynthConfig, SupernetTrainConfig,
#: SearchSettings, TrainConfig, SSDLiteHead): any of its fields may be set here, not only those
#: listed above.
OPEN_SECTIONS = ("synth", "supernet", "search", "retrain", "export", "head")


def _merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{where}{key}"
        if key not in base:
            raise ValueError(f"unknown setting {path!r}; known here: {', '.join(sorted(base))}")
        if key == "head" and value == "auto":  # anchors fitted to the training boxes by the data stage
            merged[key] = value
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"setting {path!r} must be a mapping, got {value!r}")
            merged[key] = {**base[key], **value} if key in OPEN_SECTIONS else _merge(base[key], value, f"{path}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_file(name_or_path: str) -> dict[str, Any]:
    """A settings file (YAML/JSON, safe loader) or a built-in name."""
    import yaml

    if name_or_path in BUILTIN:
        text = resources.files("tdbnas.pipeline").joinpath("configs", f"{name_or_path}.yaml").read_text()
        source = f"built-in config {name_or_path!r}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist (or use a built-in: {', '.join(BUILTIN)})")
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source} is not valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a mapping of settings, not a {type(data).__name__}")
    return data


def resolve(file: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- file <- overrides (nested mappings), validated."""
    config = copy.deepcopy(DEFAULTS)
    if file:
        config = _merge(config, load_file(file))
    if overrides:
        config = _merge(config, overrides)
    _validate(config)
    return config


def _validate(config: dict[str, Any]) -> None:
    budget = config["latency"]["budget_ms"]
    if budget != "auto" and not (isinstance(budget, int | float) and budget > 0):
        raise ValueError(f"latency.budget_ms must be a positive number of ms or 'auto', got {budget!r}")
    if not 0 < float(config["latency"]["budget_quantile"]) <= 1:
        raise ValueError("latency.budget_quantile must be in (0, 1]")
    check_signal(config["search"]["signal"])
    halving = config["search"]["halving"]
    known = {"candidates", "epochs", "eta", "schedule_epochs"}
    if halving is not None and not (isinstance(halving, dict) and set(halving) <= known
                                    and halving.get("candidates", 0) >= 1 and halving.get("epochs")):
        raise ValueError(f"search.halving must be null or {{candidates: N, epochs: [E1, E2, ...], eta: 2}}, got "
                         f"{halving!r}")
    if config["retrain"]["init"] not in ("supernet", "scratch"):
        raise ValueError(f"retrain.init must be 'supernet' or 'scratch', got {config['retrain']['init']!r}")
    if not isinstance(config["resolution"], int) or config["resolution"] < 32:
        raise ValueError(f"resolution must be an integer >= 32, got {config['resolution']!r}")
    if config["device"]["runner"] not in ("local", "adb", "ssh"):
        raise ValueError(f"device.runner must be local, adb or ssh, got {config['device']['runner']!r}")


def dump(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)
