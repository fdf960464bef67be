"""Learned latency cost models: linear regressions of end-to-end latency over a space's genomes,
for devices whose single ops cannot be timed (a phone NPU, a DSP, an Edge TPU behind a vendor
runtime) but whose whole models can.

Why: summing per-op entries assumes latency is additive, which holds on mobile CPUs and GPUs
but not on accelerators (nn-Meter: 99% within +/-10% on CPU/GPU, 83% on a VPU; reference
latency.md §1.3, §7). MobileDets therefore fit one linear regression per target device to the
end-to-end latencies of several thousand random architectures (reference mobiledets.md §4,
TuNAS `mobile_cost_model.coupled_tf_features`): one-hot features per slot and choice, with
(op x input filters x output filters) cross terms. With a few hundred samples that model has
too many independent coefficients: on real devices it lost to a regression on op counts.

Two feature sets (`features=`):
  * `"shared"` (default, `tdbnas.latency.features.SharedFeatures`): per op kind the count,
    MAdds, parameters and activations of the whole network, how often each op is chosen, and
    per-slot deviations penalised harder than the shared columns (`tdbnas.latency.ridge`), so
    an op's cost is learned once for all slots and a slot departs from it only as far as the
    data demand;
  * `"onehot"`: the TuNAS layout (`FeatureLayout`): per slot with more than one choice, a 0/1
    indicator of each choice but the first (treatment coding), and with `cross_terms=True`,
    per interaction group of slots, the products of the members' indicators over every subset
    of two or more members. For a `BlockSpace` a layer slot's group is (op, input-width slot,
    output-width slot); other spaces take explicit `groups`, by default adjacent slot pairs.

The ridge penalty is chosen by k-fold cross-validation inside the training samples unless one
is given (`ridge=`, per sample on standardised columns). A fit refuses fewer than
`ridge.MIN_SAMPLES` samples, and an unpenalised one-hot fit with fewer samples than features;
it warns (`CostModelWarning`, also kept in the model's metadata) when the samples are fewer than
the shared columns, when a fixed penalty leaves fewer than two samples per feature, or when
cross-validation prefers the mean to the features. An optional *base* (another fitted cost
model: another device's, or one fitted to a profile's predictions) enters as an offset (the
model learns the residual) or as one more feature.

`cross_validate` reports the held-out error of the whole procedure (penalty selection
included) with the baselines MAdds-only and op-count regression on the same folds; `fit`
collects samples with a caller-supplied `measure` and holds out a share. Models are JSON (the
space's description, the feature layout, coefficients in raw feature units, a schema version)
and refuse genomes of any other space. No pickle.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tdbnas.latency import ridge as ridge_lib
from tdbnas.latency.features import SharedFeatures
from tdbnas.spaces import ArchSpec, BlockSpace, GenomeSpace, SearchSpace

FORMAT = "tdbnas.cost-model"
SCHEMA_VERSION = 2

Condition = tuple[int, int]  # (slot index, choice index)
Feature = tuple[Condition, ...]  # all conditions hold -> 1.0


class CostModelError(ValueError):
    """A malformed or incompatible cost-model file, or a model used with the wrong space."""


# ---- feature layout -------------------------------------------------------------------------
def block_space_groups(space: BlockSpace) -> tuple[tuple[int, ...], ...]:
    """TuNAS's (op, input filters, output filters) per layer slot of a `BlockSpace`, as slot
    indices; members with a single possible value (fixed op or width) are left out."""
    index = {slot.name: i for i, slot in enumerate(space.slots)}
    groups: list[tuple[int, ...]] = []
    previous_width: int | None = None
    for block in space.blocks:
        width = index.get(f"{block.name}.width")
        for position in range(block.layers):
            op = index.get(f"{block.name}.{position + 1}")
            members = (op, previous_width if position == 0 else None, width)
            group = tuple(sorted({m for m in members if m is not None}))
            if len(group) >= 2:
                groups.append(group)
        previous_width = width
    return tuple(dict.fromkeys(groups))


def default_groups(space: GenomeSpace) -> tuple[tuple[int, ...], ...]:
    if isinstance(space, BlockSpace):
        return block_space_groups(space)
    return tuple((i, i + 1) for i in range(len(space.slots) - 1))


@dataclass(frozen=True)
class FeatureLayout:
    """Which 0/1 feature each column is, for one space's slot layout."""

    kind: ClassVar[str] = "onehot"
    space: str
    slots: tuple[tuple[str, tuple[str, ...]], ...]  # (slot name, choices as text)
    groups: tuple[tuple[int, ...], ...]             # interaction groups; () without cross terms
    features: tuple[Feature, ...]

    @classmethod
    def build(cls, space: GenomeSpace, *, cross_terms: bool = False,
              groups: Sequence[Sequence[int]] | None = None) -> FeatureLayout:
        slots = tuple((slot.name, tuple(str(c) for c in slot.choices)) for slot in space.slots)
        sizes = [len(choices) for _, choices in slots]
        chosen: tuple[tuple[int, ...], ...] = ()
        if cross_terms:
            raw = default_groups(space) if groups is None else groups
            chosen = tuple(tuple(sorted({int(s) for s in g})) for g in raw)
            for group in chosen:
                if any(not 0 <= s < len(sizes) for s in group):
                    raise ValueError(f"interaction group {list(group)} names a slot outside 0..{len(sizes) - 1}")
        elif groups is not None:
            raise ValueError("interaction groups need cross_terms=True")
        return cls(space.name, slots, chosen, _features(sizes, chosen))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(choices) for _, choices in self.slots)

    def __len__(self) -> int:
        return len(self.features)

    def names(self) -> list[str]:
        return [" * ".join(f"{self.slots[s][0]}={self.slots[s][1][c]}" for s, c in feature)
                for feature in self.features]

    def check_space(self, space: GenomeSpace) -> None:
        """Refuse a space other than the one the layout was built for."""
        if space.name != self.space:
            raise CostModelError(f"this cost model was fitted on space {self.space!r}, not {space.name!r}")
        theirs = tuple((slot.name, tuple(str(c) for c in slot.choices)) for slot in space.slots)
        if theirs != self.slots:
            where = next((i for i, (a, b) in enumerate(zip(theirs, self.slots)) if a != b), min(len(theirs),
                                                                                              len(self.slots)))
            raise CostModelError(f"space {space.name!r} is not the one this cost model was fitted on: its slot "
                                 f"layout differs at slot {where} ({len(theirs)} slots now, {len(self.slots)} then)")

    def check_genomes(self, genomes: Any) -> np.ndarray:
        """`genomes` as an (n, slots) int array, every gene in range (vectorised)."""
        array = np.asarray(genomes)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != len(self.slots):
            raise ValueError(f"genomes must be (n, {len(self.slots)}) for space {self.space!r}, got shape "
                             f"{array.shape}")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"genomes must hold integer choice indices, got dtype {array.dtype}")
        bad = (array < 0) | (array >= np.asarray(self.sizes))
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            raise ValueError(f"genome {row}: gene {int(array[row, col])} out of range for slot "
                             f"{self.slots[col][0]!r} ({self.sizes[col]} choices)")
        return array.astype(np.int64, copy=False)

    def encode(self, genomes: Any) -> np.ndarray:
        """The (n, features) 0/1 design matrix of `genomes`, without a Python loop over rows."""
        g = self.check_genomes(genomes)
        n, sizes = len(g), self.sizes
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        ones_column = int(sum(sizes))
        onehot = np.zeros((n, ones_column + 1))
        onehot[:, ones_column] = 1.0
        onehot[np.repeat(np.arange(n), len(sizes)), (g + offsets).ravel()] = 1.0
        if not self.features:
            return np.zeros((n, 0))
        order = max(len(f) for f in self.features)
        columns = np.full((len(self.features), order), ones_column, dtype=np.int64)
        for row, feature in enumerate(self.features):
            for k, (slot, choice) in enumerate(feature):
                columns[row, k] = offsets[slot] + choice
        design = onehot[:, columns[:, 0]]
        for k in range(1, order):
            design *= onehot[:, columns[:, k]]
        return design

    def to_json(self) -> dict[str, Any]:
        return {"space": self.space, "slots": [{"name": n, "choices": list(c)} for n, c in self.slots],
                "groups": [list(g) for g in self.groups],
                "features": [[list(c) for c in f] for f in self.features]}


def _features(sizes: Sequence[int], groups: Sequence[Sequence[int]]) -> tuple[Feature, ...]:
    """Main effects (every non-reference choice of every slot with a choice), then the products
    over every subset of two or more varying members of each group (deduplicated)."""
    features: dict[Feature, None] = {}
    for slot, size in enumerate(sizes):
        for choice in range(1, size):
            features[((slot, choice),)] = None
    for group in groups:
        varying = [s for s in group if sizes[s] > 1]
        for order in range(2, len(varying) + 1):
            for subset in itertools.combinations(varying, order):
                for choices in itertools.product(*(range(1, sizes[s]) for s in subset)):
                    features[tuple(zip(subset, choices))] = None
    return tuple(features)


# ---- error report ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ErrorReport:
    """Prediction error on a set of architectures (nn-Meter / MobileDets style)."""

    n: int
    median_ape_pct: float    # median |predicted - measured| / measured, in %
    within_10_pct: float     # share (0..1) with |error| <= 10%
    spearman: float          # rank correlation: what search needs
    max_ape_pct: float
    kendall: float = float("nan")  # Kendall's tau-b: the share of pairs ordered right, rescaled

    def to_json(self) -> dict[str, float]:
        return {"n": self.n, "median_ape_pct": self.median_ape_pct, "within_10_pct": self.within_10_pct,
                "spearman": self.spearman, "kendall": self.kendall, "max_ape_pct": self.max_ape_pct}

    def summary(self) -> str:
        return (f"median |error| {self.median_ape_pct:.2f}%, within +/-10%: {100 * self.within_10_pct:.1f}%, "
                f"Spearman {self.spearman:.3f}, Kendall {self.kendall:.3f} (n={self.n}, max |error| "
                f"{self.max_ape_pct:.1f}%)")


def error_report(predicted: Any, measured: Any) -> ErrorReport:
    p, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != y.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError("an error report needs equally long, non-empty predicted and measured vectors")
    ape = np.abs(p - y) / y * 100
    spearman = kendall = float("nan")
    if len(p) >= 2 and np.ptp(p) > 0 and np.ptp(y) > 0:
        from scipy.stats import kendalltau, spearmanr

        spearman = float(spearmanr(p, y).statistic)
        kendall = float(kendalltau(p, y).statistic)
    return ErrorReport(len(p), float(np.median(ape)), float(np.mean(ape <= 10.0)), spearman, float(ape.max()),
                       kendall)


class CostModelWarning(UserWarning):
    """A fit that may not hold up on new architectures (too few samples for the model)."""


# ---- the model ------------------------------------------------------------------------------
Layout = FeatureLayout | SharedFeatures
BASE_MODES = ("offset", "feature")


@dataclass(frozen=True)
class CostModel:
    """`latency_ms = intercept + features(genome) @ coefficients`, plus the base model's
    prediction when it is an offset (`base_mode="offset"`), or with it as the last feature."""

    layout: Layout
    intercept: float
    coefficients: np.ndarray
    ridge: float | None = 0.0
    metadata: Mapping[str, Any] = field(default_factory=dict)
    base: CostModel | None = None
    base_mode: str | None = None

    @property
    def space(self) -> str:
        return self.layout.space

    @property
    def cross_terms(self) -> bool:
        return isinstance(self.layout, FeatureLayout) and bool(self.layout.groups)

    @property
    def features(self) -> str:
        return self.layout.kind

    def design(self, genomes: Any) -> np.ndarray:
        """The feature matrix of `genomes` (with the base prediction as last column in feature mode)."""
        x = self.layout.encode(genomes)
        if self.base is not None and self.base_mode == "feature":
            x = np.hstack([x, self.base.predict_genomes(genomes)[:, None]])
        return x

    def predict_genomes(self, genomes: Any) -> np.ndarray:
        """Latency (ms) of each genome, all at once."""
        predicted = self.design(genomes) @ self.coefficients + self.intercept
        if self.base is not None and self.base_mode == "offset":
            predicted = predicted + self.base.predict_genomes(genomes)
        return predicted

    def predict(self, space: SearchSpace, archs: Sequence[ArchSpec]) -> np.ndarray:
        """Latency (ms) of architectures of `space` (which must be the space the model was fitted on)."""
        self.layout.check_space(space)
        return self.predict_genomes(np.array([space.encode(a) for a in archs], dtype=np.int64).reshape(
            len(archs), len(space.slots)))

    def as_feasibility(self, space: SearchSpace, budget_ms: float) -> Callable[[ArchSpec], bool]:
        """`arch -> predicted <= budget_ms`, for `SearchSpace.with_feasibility`."""
        self.layout.check_space(space)
        return lambda arch: bool(self.predict_genomes(space.encode(arch))[0] <= budget_ms)

    def names(self) -> list[str]:
        extra = ["base"] if self.base is not None and self.base_mode == "feature" else []
        return self.layout.names() + extra

    def terms(self) -> list[tuple[str, float]]:
        """(feature name, coefficient) pairs, largest effect first: what the model learned. For
        shared features the coefficient is per unit of the feature (ms per MAdd, per op, ...)."""
        pairs = list(zip(self.names(), map(float, self.coefficients)))
        return sorted(pairs, key=lambda kv: -abs(kv[1]))

    # ---- JSON -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "model": self.features}
        if isinstance(self.layout, FeatureLayout):
            data.update(self.layout.to_json(), cross_terms=self.cross_terms)
        else:
            data.update(space=self.space, shared=self.layout.to_json())
        data.update(ridge=self.ridge, intercept=self.intercept, coefficients=[float(c) for c in self.coefficients],
                    feature_names=self.names(), metadata=dict(self.metadata))
        if self.base is not None:
            data.update(base=self.base.to_json(), base_mode=self.base_mode)
        return data

    @classmethod
    def from_json(cls, data: Any, source: str = "cost model") -> CostModel:
        try:
            return _from_json(data)
        except CostModelError as exc:
            raise CostModelError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CostModelError(f"{source} is not a valid tdbnas cost model: {detail}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a killed process leaves the old file or the new one, never half)."""
        from tdbnas.spaces.atomic import write_json_atomic

        return Path(write_json_atomic(path, self.to_json()))

    @classmethod
    def load(cls, path: str | os.PathLike[str], space: GenomeSpace | None = None) -> CostModel:
        """Read a model; with `space`, also refuse it unless it was fitted on that space."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CostModelError(f"cannot read cost model {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CostModelError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
        model = cls.from_json(data, str(path))
        if space is not None:
            model.layout.check_space(space)
        return model


def _from_json(data: Any) -> CostModel:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CostModelError(f"not a tdbnas cost model (no \"format\": \"{FORMAT}\")")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise CostModelError(f"cost-model schema version {version!r} is not one this tdbnas reads "
                             f"({SCHEMA_VERSION}); {'upgrade tdbnas' if isinstance(version, int) else 'bad file'}")
    kind = data.get("model", "onehot")
    layout: Layout
    if kind == "onehot":
        slots = tuple((str(s["name"]), tuple(str(c) for c in s["choices"])) for s in data["slots"])
        sizes = [len(c) for _, c in slots]
        groups = tuple(tuple(int(s) for s in g) for g in data["groups"])
        features = tuple(tuple((int(s), int(c)) for s, c in f) for f in data["features"])
        for feature in features:
            for slot, choice in feature:
                if not (0 <= slot < len(sizes) and 0 <= choice < sizes[slot]):
                    raise CostModelError(f"feature {[list(c) for c in feature]} names a slot or choice outside the "
                                         "layout")
        layout = FeatureLayout(str(data["space"]), slots, groups, features)
    elif kind == "shared":
        layout = SharedFeatures.from_json(data["shared"])
    else:
        raise CostModelError(f"unknown model kind {kind!r} (onehot or shared)")
    base, base_mode = None, data.get("base_mode")
    if data.get("base") is not None:
        if base_mode not in BASE_MODES:
            raise CostModelError(f"base_mode must be one of {', '.join(BASE_MODES)}, got {base_mode!r}")
        base = _from_json(data["base"])
    coefficients = np.asarray(data["coefficients"], dtype=float)
    intercept = float(data["intercept"])
    expected = len(layout) + (1 if base is not None and base_mode == "feature" else 0)
    if coefficients.shape != (expected,):
        raise CostModelError(f"{expected} features but {coefficients.size} coefficients")
    if not (np.all(np.isfinite(coefficients)) and math.isfinite(intercept)):
        raise CostModelError("coefficients and intercept must be finite numbers")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CostModelError("\"metadata\" must be an object")
    ridge = data.get("ridge", 0.0)
    return CostModel(layout, intercept, coefficients, None if ridge is None else float(ridge), metadata, base,
                     base_mode if base is not None else None)


# ---- fitting --------------------------------------------------------------------------------
def build_layout(space: GenomeSpace, *, features: str = "shared", cross_terms: bool = False,
                 groups: Sequence[Sequence[int]] | None = None, resolution: Any = None, head: Any = None,
                 width_multiplier: float = 1.0) -> Layout:
    if features == "onehot":
        return FeatureLayout.build(space, cross_terms=cross_terms, groups=groups)
    if features != "shared":
        raise ValueError(f"features must be 'shared' or 'onehot', got {features!r}")
    if cross_terms or groups is not None:
        raise ValueError("cross terms belong to the one-hot features (features='onehot')")
    return SharedFeatures(space, resolution=resolution, head=head, width_multiplier=width_multiplier)


@dataclass(frozen=True)
class Prepared:
    """A design ready to fit: columns, which are deviations, target, offset."""

    x: np.ndarray
    deviation: np.ndarray
    y: np.ndarray
    offset: np.ndarray
    free: np.ndarray  # unpenalised columns: the base prediction in feature mode


def prepare(layout: Layout, genomes: Any, latencies_ms: Any, base: CostModel | None = None,
            base_mode: str | None = None) -> Prepared:
    g = layout.check_genomes(genomes)
    y = np.asarray(latencies_ms, dtype=float)
    if y.shape != (len(g),):
        raise ValueError(f"{len(g)} genomes but {y.size} latencies")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError("latencies must be positive finite milliseconds")
    x = layout.encode(g)
    deviation = layout.deviation_mask() if isinstance(layout, SharedFeatures) else np.zeros(len(layout), dtype=bool)
    offset = np.zeros(len(y))
    free = np.zeros(len(deviation), dtype=bool)
    if base is not None:
        if base_mode not in BASE_MODES:
            raise ValueError(f"base_mode must be one of {', '.join(BASE_MODES)}, got {base_mode!r}")
        if base.space != layout.space:
            raise ValueError(f"the base model was fitted on space {base.space!r}, not {layout.space!r}")
        predicted = base.predict_genomes(g)
        if base_mode == "offset":
            offset = predicted
        else:
            x, deviation = np.hstack([x, predicted[:, None]]), np.append(deviation, False)
            free = np.append(free, True)
    return Prepared(x, deviation, y, offset, free)


def _check_size(layout: Layout, data: Prepared, n: int, ridge: float | None) -> list[str]:
    """Refuse what cannot be fitted on `n` samples; return warnings for what may not generalise."""
    features = len(layout)
    kind = f"{features} features ({'with' if isinstance(layout, FeatureLayout) and layout.groups else 'without'} " \
           "cross terms)" if isinstance(layout, FeatureLayout) else f"{features} features"
    if ridge == 0 and n < features + 1:
        raise ValueError(f"{n} training architectures for {kind} plus the intercept: need at least {features + 1}; "
                         "sample more or let cross-validation choose a ridge penalty")
    if n < 2:
        raise ValueError(f"a cost model needs at least 2 training architectures, got {n}")
    if ridge is None and n < ridge_lib.MIN_SAMPLES:
        raise ValueError(f"{n} training architectures: choosing the ridge penalty by cross-validation needs at "
                         f"least {ridge_lib.MIN_SAMPLES}; sample more")
    warnings_: list[str] = []
    shared = None
    if isinstance(layout, SharedFeatures):  # the shared columns that vary in these samples
        shared = int((data.x[:, ~data.deviation].std(axis=0) > 0).sum())
    elif ridge is None and n < features + 1:
        warnings_.append(f"{n} samples for {features} one-hot features: the cross-validated penalty, not the data, "
                         "sets most per-slot costs; the shared features (features='shared') need far fewer samples")
    if shared is not None and n < shared + 1:
        warnings_.append(f"{n} samples for {shared} shared features: the ridge prior, not the data, sets part of the "
                         "model; expect a larger error than the cross-validated one on new architectures")
    if ridge is not None and n < 2 * (features + 1):
        warnings_.append(f"a fixed ridge penalty {ridge:g} with {n} samples for {features} features: fewer than two "
                         "samples per coefficient, so this fit likely overfits; let cross-validation choose the "
                         "penalty (ridge=None, --ridge cv)")
    return warnings_


def _emit(messages: Sequence[str]) -> None:
    import warnings

    for message in messages:
        warnings.warn(message, CostModelWarning, stacklevel=3)


def fit_cost_model(space: GenomeSpace, genomes: Any, latencies_ms: Any, *, features: str = "shared",
                   cross_terms: bool = False, ridge: float | None = None,
                   groups: Sequence[Sequence[int]] | None = None, base: CostModel | None = None,
                   base_mode: str = "offset", folds: int = ridge_lib.DEFAULT_FOLDS, seed: int = 0,
                   resolution: Any = None, head: Any = None, width_multiplier: float = 1.0,
                   metadata: Mapping[str, Any] | None = None) -> CostModel:
    """Fit a cost model of `space` to measured latencies; `ridge=None` (default) chooses the
    penalty (and for shared features how hard deviations are held back) by `folds`-fold
    cross-validation on these samples only. `resolution`, `head`, `width_multiplier`: the
    detector the latencies are of (architecture-language spaces with shared features)."""
    if ridge is not None and not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0 or None (cross-validated), got {ridge}")
    layout = build_layout(space, features=features, cross_terms=cross_terms, groups=groups, resolution=resolution,
                          head=head, width_multiplier=width_multiplier)
    data = prepare(layout, genomes, latencies_ms, base, base_mode if base is not None else None)
    notes = _check_size(layout, data, len(data.y), ridge)
    fitted = ridge_lib.fit_ridge(data.x, data.y - data.offset, data.deviation, lam=ridge, ratio=None,
                                 folds=folds, seed=seed, free=data.free)
    if fitted.at_grid_edge:
        notes.append("cross-validation chose the strongest penalty tried: the features explain little of these "
                     "latencies (noise, or a device this model cannot describe); predictions stay near the mean")
    _emit(notes)
    meta = {"samples": len(data.y), "features": features, "ridge_selection": "cv" if ridge is None else "fixed",
            "deviation_ratio": fitted.ratio, "cv_rmse_ms": fitted.cv_rmse, "warnings": notes, **dict(metadata or {})}
    return CostModel(layout, fitted.intercept, fitted.coefficients, fitted.lam, meta, base,
                     base_mode if base is not None else None)


# ---- cross-validated report with baselines ---------------------------------------------------
def _ols_predictions(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold predictions of an unpenalised least-squares fit (the baselines)."""
    return ridge_lib.cross_validated_predictions(x, y, lam=0.0, folds=folds, seed=seed)


def baseline_designs(space: GenomeSpace, genomes: Any, *, resolution: Any = None, head: Any = None,
                     width_multiplier: float = 1.0) -> dict[str, np.ndarray]:
    """The baselines' designs: total MAdds (`madds`), and how often each op is chosen (`op-count`)."""
    shared = SharedFeatures(space, resolution=resolution, head=head, width_multiplier=width_multiplier)
    designs = {"op-count": shared.count_matrix(genomes)}
    if any(name == "madds" or name.endswith(".madds") for name in shared.physics):
        designs["madds"] = shared.madds(genomes)[:, None]  # a space without MAdds attributes has no such baseline
    return designs


def cross_validate(space: GenomeSpace, genomes: Any, latencies_ms: Any, *, baselines: bool = True,
                   folds: int = ridge_lib.DEFAULT_FOLDS, seed: int = 0, **options: Any) -> dict[str, ErrorReport]:
    """Held-out error of `fit_cost_model(space, genomes, latencies_ms, **options)` by `folds`-fold
    cross-validation (each fold reselects the penalty on its own training part), under "model";
    with `baselines`, of the MAdds-only and op-count regressions on the same folds."""
    layout = build_layout(space, **{k: options[k] for k in ("features", "cross_terms", "groups", "resolution",
                                                             "head", "width_multiplier") if k in options})
    data = prepare(layout, genomes, latencies_ms, options.get("base"),
                   options.get("base_mode", "offset") if options.get("base") is not None else None)
    _check_size(layout, data, len(data.y) - math.ceil(len(data.y) / folds), options.get("ridge"))
    predicted = ridge_lib.cross_validated_predictions(data.x, data.y, data.deviation, lam=options.get("ridge"),
                                                      folds=folds, seed=seed, offset=data.offset, free=data.free)
    reports = {"model": error_report(predicted, data.y)}
    if baselines:
        designs = baseline_designs(space, genomes, **{k: options[k] for k in ("resolution", "head",
                                                                               "width_multiplier") if k in options})
        for name, x in designs.items():
            reports[name] = error_report(_ols_predictions(x, data.y, folds, seed), data.y)
    return reports


@dataclass(frozen=True)
class LatencySamples:
    """End-to-end latencies of distinct members of one space."""

    space: str
    genomes: np.ndarray     # (n, slots) int
    latency_ms: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.latency_ms)

    def split(self, holdout: float, seed: int = 0) -> tuple[LatencySamples, LatencySamples]:
        """(train, held out): a random `holdout` share (at least one) is held out."""
        if not 0 < holdout < 1:
            raise ValueError(f"holdout must be a fraction strictly between 0 and 1, got {holdout}")
        n_test = max(1, round(len(self) * holdout))
        if n_test >= len(self):
            raise ValueError(f"holding out {holdout:g} of {len(self)} architectures leaves none to fit on")
        order = np.random.default_rng(seed).permutation(len(self))
        test, train = order[:n_test], order[n_test:]
        return (LatencySamples(self.space, self.genomes[train], self.latency_ms[train]),
                LatencySamples(self.space, self.genomes[test], self.latency_ms[test]))


def sample_genomes(space: GenomeSpace, count: int, seed: int = 0) -> np.ndarray:
    """`count` distinct random genomes of `space` (uniform over its members)."""
    if count < 1:
        raise ValueError(f"sample at least one architecture, got {count}")
    if space.size() < count:
        raise ValueError(f"space {space.name!r} has only {space.size()} members; cannot sample {count} distinct ones")
    rng = np.random.default_rng(seed)
    sizes = np.array([len(slot) for slot in space.slots], dtype=np.int64)
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < count:
        batch = (rng.random((2 * (count - len(seen)), len(sizes))) * sizes).astype(np.int64)
        for row in map(tuple, batch.tolist()):
            seen.setdefault(row, None)
            if len(seen) == count:
                break
    return np.array(list(seen), dtype=np.int64).reshape(count, len(sizes))


def collect_latencies(space: SearchSpace, samples: int, measure: Callable[[ArchSpec], float] | None = None, *,
                      measure_many: Callable[[Sequence[ArchSpec]], Sequence[float]] | None = None,
                      seed: int = 0) -> LatencySamples:
    """Sample `samples` distinct random members of `space` and time each end to end, with
    `measure(arch) -> ms` or, batched, `measure_many(archs) -> ms per arch` (the caller's
    real measurement, e.g. `tdbnas.latency.profiling.measure_detectors`, or a modelled profile)."""
    if (measure is None) == (measure_many is None):
        raise ValueError("pass exactly one of measure(arch) -> ms and measure_many(archs) -> ms")
    genomes = sample_genomes(space, samples, seed)
    archs = [space.decode(tuple(int(g) for g in row)) for row in genomes]
    values = list(measure_many(archs)) if measure_many is not None else [measure(a) for a in archs]  # type: ignore[misc]
    latency = np.asarray(values, dtype=float)
    if latency.shape != (len(archs),):
        raise ValueError(f"the measurement returned {latency.size} values for {len(archs)} architectures")
    bad = np.flatnonzero(~(np.isfinite(latency) & (latency > 0)))
    if len(bad):
        raise ValueError(f"the measurement returned {float(latency[bad[0]])!r} ms for {archs[bad[0]].encode()}; "
                         "latencies must be positive finite milliseconds")
    return LatencySamples(space.name, genomes, latency)


@dataclass(frozen=True)
class FitResult:
    model: CostModel
    train: ErrorReport
    holdout: ErrorReport
    data: LatencySamples


def fit(space: SearchSpace, samples: int, measure: Callable[[ArchSpec], float] | None = None, *,
        measure_many: Callable[[Sequence[ArchSpec]], Sequence[float]] | None = None, holdout: float = 0.2,
        features: str = "shared", cross_terms: bool = False, ridge: float | None = None,
        groups: Sequence[Sequence[int]] | None = None, seed: int = 0, resolution: Any = None, head: Any = None,
        width_multiplier: float = 1.0, metadata: Mapping[str, Any] | None = None) -> FitResult:
    """Collect `samples` end-to-end latencies, hold out a share, fit, and report both errors.

    The sample count is checked before anything is measured: measurements can be expensive."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction strictly between 0 and 1, got {holdout}")
    layout = build_layout(space, features=features, cross_terms=cross_terms, groups=groups, resolution=resolution,
                          head=head, width_multiplier=width_multiplier)

    def trained(n: int) -> int:
        return n - max(1, round(n * holdout))

    needed = len(layout) + 1 if ridge == 0 else ridge_lib.MIN_SAMPLES if ridge is None else 2
    if trained(samples) < needed:
        enough = samples
        while trained(enough) < needed:
            enough += 1
        what = (f"space {space.name!r} has {len(layout)} features "
                f"({'with' if cross_terms else 'without'} cross terms) plus the intercept" if ridge == 0
                else "choosing the penalty by cross-validation needs " f"{ridge_lib.MIN_SAMPLES}")
        raise ValueError(f"{samples} samples leave {trained(samples)} to fit on after holding out {holdout:g}, but "
                         f"{what}: need at least {enough} samples, or a ridge penalty")
    data = collect_latencies(space, samples, measure, measure_many=measure_many, seed=seed)
    train, test = data.split(holdout, seed)
    meta = {"train": len(train), "holdout": len(test), "seed": seed, **dict(metadata or {}), "samples": samples}
    model = fit_cost_model(space, train.genomes, train.latency_ms, features=features, cross_terms=cross_terms,
                           ridge=ridge, groups=groups, seed=seed, resolution=resolution, head=head,
                           width_multiplier=width_multiplier, metadata=meta)
    train_report = error_report(model.predict_genomes(train.genomes), train.latency_ms)
    test_report = error_report(model.predict_genomes(test.genomes), test.latency_ms)
    model = dataclasses.replace(model, metadata={**model.metadata, "train_error": train_report.to_json(),
                                                 "holdout_error": test_report.to_json()})
    return FitResult(model, train_report, test_report, data)
