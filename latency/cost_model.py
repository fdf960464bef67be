"""Learned latency cost model: a linear regression over a search space's genome.

Why: summing per-op entries assumes latency is additive, which holds on mobile CPUs and GPUs
but not on accelerators (nn-Meter: 99% within +/-10% on CPU/GPU, 83% on a VPU; reference
latency.md §1.3, §7), where whole-model effects (Edge TPU parameter caching and CPU/TPU
partitioning, memory traffic between ops) dominate. MobileDets therefore fit one linear
regression per target device to the end-to-end latencies of several thousand random
architectures and used it in place of on-device measurement during the search (reference
mobiledets.md §4, TuNAS `mobile_cost_model.coupled_tf_features` / `cost_model_lib`):
cost = features . kernel + bias, where a layer's features are the Kronecker product of the
one-hot masks of its op, input filters and output filters, and features that can take only
one value are dropped.

Here, for any `SearchSpace` (slots and genomes are the whole interface):
  * main features: per slot with more than one choice, a 0/1 indicator of each choice but the
    first (treatment coding: choice 0 is folded into the intercept, so the design has full
    column rank and "at least as many samples as features" is the exact identifiability rule);
  * cross terms (`cross_terms=True`): per interaction group of slots, the products of the
    members' indicators over every subset of two or more members, which spans the same
    functions as TuNAS's full Kronecker product. For a `BlockSpace` a layer slot's group is
    (op, input-width slot, output-width slot): the previous block's width and this block's for
    the first layer of a block, this block's width for the others; fixed widths are dropped.
    Other spaces take explicit `groups`, by default adjacent slot pairs;
  * fit by least squares with optional ridge (`ridge * ||w||^2` against the sum of squared
    errors in ms^2; the intercept is not penalised); prediction is one matrix product over
    many genomes at once.

`fit` collects the data (random distinct members of the space, timed by a caller-supplied
`measure(arch) -> ms` or `measure_many(archs) -> ms`), holds out a share, fits and reports the
held-out median absolute % error, share within +/-10% and Spearman rank correlation. Models
are saved as JSON with the space's name and slot layout, the feature layout and a schema
version, and refuse to score genomes of any other space. No pickle.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.spaces import ArchSpec, BlockSpace, SearchSpace

FORMAT = "tdbnas.cost-model"
SCHEMA_VERSION = 1

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


def default_groups(space: SearchSpace) -> tuple[tuple[int, ...], ...]:
    if isinstance(space, BlockSpace):
        return block_space_groups(space)
    return tuple((i, i + 1) for i in range(len(space.slots) - 1))


@dataclass(frozen=True)
class FeatureLayout:
    """Which 0/1 feature each column is, for one space's slot layout."""

    space: str
    slots: tuple[tuple[str, tuple[str, ...]], ...]  # (slot name, choices as text)
    groups: tuple[tuple[int, ...], ...]             # interaction groups; () without cross terms
    features: tuple[Feature, ...]

    @classmethod
    def build(cls, space: SearchSpace, *, cross_terms: bool = False,
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

    def check_space(self, space: SearchSpace) -> None:
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

    def to_json(self) -> dict[str, float]:
        return {"n": self.n, "median_ape_pct": self.median_ape_pct, "within_10_pct": self.within_10_pct,
                "spearman": self.spearman, "max_ape_pct": self.max_ape_pct}

    def summary(self) -> str:
        return (f"median |error| {self.median_ape_pct:.2f}%, within +/-10%: {100 * self.within_10_pct:.1f}%, "
                f"Spearman {self.spearman:.3f} (n={self.n}, max |error| {self.max_ape_pct:.1f}%)")


def error_report(predicted: Any, measured: Any) -> ErrorReport:
    p, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != y.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError("an error report needs equally long, non-empty predicted and measured vectors")
    ape = np.abs(p - y) / y * 100
    spearman = float("nan")
    if len(p) >= 2 and np.ptp(p) > 0 and np.ptp(y) > 0:
        from scipy.stats import spearmanr

        spearman = float(spearmanr(p, y).statistic)
    return ErrorReport(len(p), float(np.median(ape)), float(np.mean(ape <= 10.0)), spearman, float(ape.max()))


# ---- the model ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostModel:
    """`latency_ms = intercept + design(genome) @ coefficients` for one space."""

    layout: FeatureLayout
    intercept: float
    coefficients: np.ndarray
    ridge: float = 0.0
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def space(self) -> str:
        return self.layout.space

    @property
    def cross_terms(self) -> bool:
        return bool(self.layout.groups)

    def predict_genomes(self, genomes: Any) -> np.ndarray:
        """Latency (ms) of each genome, all at once."""
        return self.layout.encode(genomes) @ self.coefficients + self.intercept

    def predict(self, space: SearchSpace, archs: Sequence[ArchSpec]) -> np.ndarray:
        """Latency (ms) of architectures of `space` (which must be the space the model was fitted on)."""
        self.layout.check_space(space)
        return self.predict_genomes(np.array([space.encode(a) for a in archs], dtype=np.int64).reshape(
            len(archs), len(space.slots)))

    def as_feasibility(self, space: SearchSpace, budget_ms: float) -> Callable[[ArchSpec], bool]:
        """`arch -> predicted <= budget_ms`, for `SearchSpace.with_feasibility`."""
        self.layout.check_space(space)
        return lambda arch: bool(self.predict_genomes(space.encode(arch))[0] <= budget_ms)

    def terms(self) -> list[tuple[str, float]]:
        """(feature name, ms) pairs, largest effect first: what the model learned."""
        pairs = list(zip(self.layout.names(), map(float, self.coefficients)))
        return sorted(pairs, key=lambda kv: -abs(kv[1]))

    # ---- JSON -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, **self.layout.to_json(),
                "cross_terms": self.cross_terms, "ridge": self.ridge, "intercept": self.intercept,
                "coefficients": [float(c) for c in self.coefficients], "feature_names": self.layout.names(),
                "metadata": dict(self.metadata)}

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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.to_json(), handle, indent=1)
                handle.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], space: SearchSpace | None = None) -> CostModel:
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
    slots = tuple((str(s["name"]), tuple(str(c) for c in s["choices"])) for s in data["slots"])
    sizes = [len(c) for _, c in slots]
    groups = tuple(tuple(int(s) for s in g) for g in data["groups"])
    features = tuple(tuple((int(s), int(c)) for s, c in f) for f in data["features"])
    for feature in features:
        for slot, choice in feature:
            if not (0 <= slot < len(sizes) and 0 <= choice < sizes[slot]):
                raise CostModelError(f"feature {[list(c) for c in feature]} names a slot or choice outside the layout")
    coefficients = np.asarray(data["coefficients"], dtype=float)
    intercept = float(data["intercept"])
    if coefficients.shape != (len(features),):
        raise CostModelError(f"{len(features)} features but {coefficients.size} coefficients")
    if not (np.all(np.isfinite(coefficients)) and math.isfinite(intercept)):
        raise CostModelError("coefficients and intercept must be finite numbers")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CostModelError("\"metadata\" must be an object")
    layout = FeatureLayout(str(data["space"]), slots, groups, features)
    return CostModel(layout, intercept, coefficients, float(data.get("ridge", 0.0)), metadata)


# ---- fitting --------------------------------------------------------------------------------
def fit_cost_model(space: SearchSpace, genomes: Any, latencies_ms: Any, *, cross_terms: bool = False,
                   ridge: float = 0.0, groups: Sequence[Sequence[int]] | None = None,
                   metadata: Mapping[str, Any] | None = None) -> CostModel:
    """Least squares (ridge if `ridge > 0`) of latency on the genome features of `space`."""
    layout = FeatureLayout.build(space, cross_terms=cross_terms, groups=groups)
    design = layout.encode(genomes)
    y = np.asarray(latencies_ms, dtype=float)
    if y.shape != (len(design),):
        raise ValueError(f"{len(design)} genomes but {y.size} latencies")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError("latencies must be positive finite milliseconds")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge}")
    needed = len(layout) + 1
    if ridge == 0 and len(y) < needed:
        raise ValueError(f"{len(y)} training architectures for {len(layout)} features "
                         f"({'with' if cross_terms else 'without'} cross terms) plus the intercept: need at least "
                         f"{needed}; sample more or set a ridge penalty")
    if len(y) < 2:
        raise ValueError(f"a cost model needs at least 2 training architectures, got {len(y)}")
    x_mean, y_mean = design.mean(axis=0), float(y.mean())
    centred = design - x_mean
    if ridge > 0:
        centred = np.vstack([centred, math.sqrt(ridge) * np.eye(len(layout))])
        target = np.concatenate([y - y_mean, np.zeros(len(layout))])
    else:
        target = y - y_mean
    coefficients = np.linalg.lstsq(centred, target, rcond=None)[0] if len(layout) else np.zeros(0)
    return CostModel(layout, float(y_mean - x_mean @ coefficients), coefficients, float(ridge), dict(metadata or {}))


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


def sample_genomes(space: SearchSpace, count: int, seed: int = 0) -> np.ndarray:
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
        cross_terms: bool = False, ridge: float = 0.0, groups: Sequence[Sequence[int]] | None = None,
        seed: int = 0, metadata: Mapping[str, Any] | None = None) -> FitResult:
    """Collect `samples` end-to-end latencies, hold out a share, fit, and report both errors.

    The feature count is checked before anything is measured: measurements can be expensive."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction strictly between 0 and 1, got {holdout}")
    layout = FeatureLayout.build(space, cross_terms=cross_terms, groups=groups)

    def trained(n: int) -> int:
        return n - max(1, round(n * holdout))

    if ridge == 0 and trained(samples) < len(layout) + 1:
        enough = max(samples, math.floor((len(layout) + 1) / (1 - holdout)) - 2)
        while trained(enough) < len(layout) + 1:
            enough += 1
        raise ValueError(f"{samples} samples leave {trained(samples)} to fit on after holding out {holdout:g}, but "
                         f"space {space.name!r} has {len(layout)} features ({'with' if cross_terms else 'without'} "
                         f"cross terms) plus the intercept: need at least {enough} samples, or a ridge penalty")
    data = collect_latencies(space, samples, measure, measure_many=measure_many, seed=seed)
    train, test = data.split(holdout, seed)
    meta = {"samples": samples, "train": len(train), "holdout": len(test), "seed": seed, **dict(metadata or {})}
    model = fit_cost_model(space, train.genomes, train.latency_ms, cross_terms=cross_terms, ridge=ridge,
                           groups=groups, metadata=meta)
    train_report = error_report(model.predict_genomes(train.genomes), train.latency_ms)
    test_report = error_report(model.predict_genomes(test.genomes), test.latency_ms)
    model = CostModel(model.layout, model.intercept, model.coefficients, model.ridge,
                      {**meta, "train_error": train_report.to_json(), "holdout_error": test_report.to_json()})
    return FitResult(model, train_report, test_report, data)
