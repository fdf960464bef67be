"""A fitted cost model (`tdbnas.latency.cost_model`) where search expects a latency predictor.

Search constraints (`tdbnas.search.Budget`) and `tdbnas run` call `predict_many(archs,
resolution, head=..., width_multiplier=...)` and read `profile`, `kind`, `runtime_version` and
`calibration`; `CostModelPredictor` answers those from the model, for any device the model was
fitted on (`tdbnas latency fit --data`: a phone NPU, a DSP, an Edge TPU board). Its kind is
"learned" in every output, and its runtime version is the model file's content hash, so a
resumed search refuses a refitted model. A model fitted on detectors of one resolution, head
or width multiplier refuses to price others: its features describe those detectors only.

On the command line a model is named `cost-model:PATH` wherever a profile name goes
(`tdbnas search --cost-model PATH` adds one; `tdbnas run` takes `latency.cost_model: PATH`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.latency.cost_model import CostModel
from tdbnas.latency.features import SharedFeatures, head_to_json
from tdbnas.latency.predictor import Prediction
from tdbnas.latency.units import DEFAULT_HEAD
from tdbnas.spaces import ArchSpec, SearchSpace, SSDLiteHead, as_hw

PREFIX = "cost-model:"


def is_cost_model(name: str) -> bool:
    return name.startswith(PREFIX)


def learned_name(path: str | Path) -> str:
    """The profile name a model file's constraint is reported under: `learned:<file stem>`."""
    text = str(path)[len(PREFIX):] if is_cost_model(str(path)) else str(path)
    return f"learned:{Path(text).stem}"


class CostModelPredictor:
    """`predict_many` / `predict` / `predict_genomes` of a fitted cost model over `space`."""

    kind = "learned"
    calibration = None

    def __init__(self, model: CostModel, space: SearchSpace, *, name: str | None = None):
        model.layout.check_space(space)
        self.model, self.space = model, space
        digest = hashlib.sha256(json.dumps(model.to_json(), sort_keys=True).encode()).hexdigest()[:12]
        self.profile = name or f"learned-{model.metadata.get('profile') or model.space}"
        self.runtime_version = f"cost-model {digest}"

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace) -> CostModelPredictor:
        """The model at `path` (a `cost-model:` prefix is stripped), checked against `space`."""
        text = str(path)[len(PREFIX):] if is_cost_model(str(path)) else str(path)
        if not Path(text).is_file():
            raise FileNotFoundError(f"cost model {text} does not exist (fit one with `tdbnas latency fit`)")
        return cls(CostModel.load(text, space), space, name=learned_name(text))

    def check(self, resolution: int | Sequence[int], head: SSDLiteHead = DEFAULT_HEAD,
              width_multiplier: float = 1.0) -> None:
        """Refuse detectors other than those the model was fitted on."""
        layout = self.model.layout
        if isinstance(layout, SharedFeatures) and not layout.categorical:
            fitted = (layout.hw, layout.head, layout.width_multiplier)
        else:
            meta = self.model.metadata
            if "resolution" not in meta:
                return  # a model that does not say what it was fitted on cannot be checked
            fitted = (as_hw(tuple(meta["resolution"])), None, float(meta.get("width_multiplier", 1.0)))
        hw = as_hw(resolution)
        if fitted[0] != hw or fitted[2] != float(width_multiplier):
            raise ValueError(f"cost model {self.profile!r} was fitted on {fitted[0][0]}x{fitted[0][1]} detectors at "
                             f"width multiplier {fitted[2]:g}, not {hw[0]}x{hw[1]} at {width_multiplier:g}: refit it "
                             "on latencies of these detectors")
        if fitted[1] is not None and fitted[1] != head:
            theirs, ours = head_to_json(fitted[1]), head_to_json(head)
            changed = ", ".join(f"{k} {theirs[k]} -> {ours[k]}" for k in theirs if theirs[k] != ours.get(k))
            raise ValueError(f"cost model {self.profile!r} was fitted on detectors with another head ({changed}); "
                             "refit it with `tdbnas latency fit --head` on latencies of these detectors")

    def predict_genomes(self, genomes: Any) -> np.ndarray:
        return self.model.predict_genomes(genomes)

    def predict_many(self, archs: Sequence[ArchSpec], resolution: int | Sequence[int], *,
                     head: SSDLiteHead = DEFAULT_HEAD, width_multiplier: float = 1.0) -> np.ndarray:
        self.check(resolution, head, width_multiplier)
        genomes = np.array([self.space.encode(a) for a in archs], dtype=np.int64).reshape(len(archs),
                                                                                         len(self.space.slots))
        return self.model.predict_genomes(genomes)

    def predict(self, arch: ArchSpec, resolution: int | Sequence[int], *, head: SSDLiteHead = DEFAULT_HEAD,
                width_multiplier: float = 1.0) -> Prediction:
        total = float(self.predict_many([arch], resolution, head=head, width_multiplier=width_multiplier)[0])
        return Prediction(arch.encode(), as_hw(resolution), total, total, (), self.profile, self.kind,
                          self.runtime_version, None)


__all__ = ["CostModelPredictor", "PREFIX", "is_cost_model", "learned_name"]
