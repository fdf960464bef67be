"""Search constraints: predicted latency budgets on one or more device profiles at once, plus
optional MAdds and parameter limits, checked in batches and checked for reachability up front.

DetNAS constrains backbone FLOPs at 224x224 (`search.py::legal`) and MMRazor's latency range
was never measured (open-mmlab/mmrazor#568). Here a candidate is a whole SSDLite detector at
the deployment resolution, and its latency is predicted per profile by `LatencyPredictor`s
(`predict_many`: one vectorised call per batch of proposals). A candidate that violates any
constraint is never evaluated. Before the first evaluation, `check_reachable` computes the
smallest value each constraint's quantity can take in the space (`tdbnas.search.minimum`) and
raises `BudgetUnreachableError` when a budget is below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tdbnas.latency.predictor import LatencyPredictor
from tdbnas.latency.units import DEFAULT_HEAD
from tdbnas.search.minimum import Minimum, min_cost, min_latency
from tdbnas.spaces import ArchSpec, BlockSpace, SearchSpace, SSDLiteHead, as_hw, detector_cost


class BudgetUnreachableError(ValueError):
    """No member of the space satisfies a constraint; `minimum` says what the space can reach."""

    def __init__(self, message: str, minimum: Minimum | None = None):
        super().__init__(message)
        self.minimum = minimum


@dataclass(frozen=True)
class Budget:
    """Predicted latency on `predictor`'s profile at most `budget_ms`; None only records it
    (e.g. the latency axis of Pareto mode on a profile without a budget). The predictor is a
    table's `LatencyPredictor` or anything with its interface (a learned cost model:
    `tdbnas.latency.learned_predictor.CostModelPredictor`)."""

    predictor: LatencyPredictor
    budget_ms: float | None = None

    def __post_init__(self) -> None:
        if self.budget_ms is not None and not (math.isfinite(self.budget_ms) and self.budget_ms > 0):
            raise ValueError(f"a latency budget must be a positive number of ms, got {self.budget_ms!r}")

    @property
    def profile(self) -> str:
        return self.predictor.profile


@dataclass(frozen=True)
class Measures:
    """What the constraints know of one candidate before it is evaluated."""

    latency_ms: dict[str, float]
    madds: int | None = None
    params: int | None = None


@dataclass
class Constraints:
    budgets: Sequence[Budget] = ()
    resolution: int | tuple[int, int] = 320
    head: SSDLiteHead = DEFAULT_HEAD
    width_multiplier: float = 1.0
    max_madds: float | None = None
    max_params: float | None = None
    _hw: tuple[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.budgets = tuple(self.budgets)
        self._hw = as_hw(self.resolution)
        profiles = [b.profile for b in self.budgets]
        if len(set(profiles)) != len(profiles):
            raise ValueError(f"each profile may have one budget; got {profiles}")
        for name in ("max_madds", "max_params"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")

    @property
    def hw(self) -> tuple[int, int]:
        return self._hw

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(b.profile for b in self.budgets)

    def predictor(self, profile: str) -> LatencyPredictor:
        for budget in self.budgets:
            if budget.profile == profile:
                return budget.predictor
        raise KeyError(f"no latency constraint on profile {profile!r} (profiles: {', '.join(self.profiles) or 'none'})")

    # ---- batches ---------------------------------------------------------------------------
    def latencies(self, archs: Sequence[ArchSpec]) -> dict[str, np.ndarray]:
        """Predicted ms of every arch on every profile: one `predict_many` per profile."""
        return {b.profile: b.predictor.predict_many(archs, self._hw, head=self.head,
                                                    width_multiplier=self.width_multiplier)
                for b in self.budgets}

    def costs(self, arch: ArchSpec) -> tuple[int, int]:
        total = detector_cost(arch, self._hw, num_classes=self.head.num_classes,
                              width_multiplier=self.width_multiplier, head=self.head).total
        return total.madds, total.params

    def feasible(self, archs: Sequence[ArchSpec]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(mask of the archs within every constraint, their predicted latencies)."""
        latencies = self.latencies(archs)
        mask = np.ones(len(archs), dtype=bool)
        for budget in self.budgets:
            if budget.budget_ms is not None:
                mask &= latencies[budget.profile] <= budget.budget_ms
        if self.max_madds is not None or self.max_params is not None:
            for i in np.flatnonzero(mask):
                madds, params = self.costs(archs[i])
                if (self.max_madds is not None and madds > self.max_madds) or \
                        (self.max_params is not None and params > self.max_params):
                    mask[i] = False
        return mask, latencies

    def measures(self, archs: Sequence[ArchSpec], latencies: dict[str, np.ndarray] | None = None) -> list[Measures]:
        latencies = self.latencies(archs) if latencies is None else latencies
        result = []
        for i, arch in enumerate(archs):
            madds, params = self.costs(arch)
            result.append(Measures({p: float(v[i]) for p, v in latencies.items()}, madds, params))
        return result

    # ---- reachability ------------------------------------------------------------------------
    def minima(self, space: SearchSpace) -> list[tuple[str, float, Minimum]]:
        """(what, limit, minimum) for every bounded constraint; empty for non-block spaces,
        whose members cannot be enumerated block by block."""
        if not isinstance(space, BlockSpace):
            return []
        found = []
        for budget in self.budgets:
            # Only a lookup table can be minimised block by block; a learned cost model's budget
            # is checked by sampling (an InfeasibleError when nothing fits).
            if budget.budget_ms is not None and isinstance(budget.predictor, LatencyPredictor):
                minimum = min_latency(space, budget.predictor, self._hw, head=self.head,
                                      width_multiplier=self.width_multiplier)
                found.append((budget.profile, budget.budget_ms, minimum))
        for quantity, limit in (("madds", self.max_madds), ("params", self.max_params)):
            if limit is not None:
                found.append((quantity, float(limit), min_cost(space, quantity, self._hw, head=self.head,
                                                               width_multiplier=self.width_multiplier)))
        return found

    def check_reachable(self, space: SearchSpace) -> list[Minimum]:
        """Raise `BudgetUnreachableError` if a constraint is below what `space` can reach.

        Each constraint is checked on its own (exactly, or with proven bounds: see
        `Minimum`). Several budgets can each be reachable yet not together; that case is
        found when sampling, which then fails with an `InfeasibleError`.
        """
        minima = self.minima(space)
        for what, limit, minimum in minima:
            if minimum.lower > limit:
                raise BudgetUnreachableError(self._unreachable(space, what, limit, minimum), minimum)
        return [minimum for _, _, minimum in minima]

    def _unreachable(self, space: SearchSpace, what: str, limit: float, minimum: Minimum) -> str:
        hw = f"{self._hw[0]}x{self._hw[1]}"
        if minimum.quantity == "latency":
            smallest = f"{_ms(minimum.lower, limit)} ms" if minimum.exact else \
                f"between {_ms(minimum.lower, limit)} and {_ms(minimum.value, limit)} ms"
            return (f"no architecture of space {space.name} fits {what} ≤ {_number(limit)} ms: the smallest predicted "
                    f"latency is {smallest} ({minimum.kind} profile, {hw}, {self.head.num_classes} classes; "
                    f"reached by {minimum.arch.encode()})")
        unit = "MAdds" if what == "madds" else "parameters"
        return (f"no architecture of space {space.name} has ≤ {limit:,.0f} {unit}: the smallest detector has "
                f"{minimum.value:,.0f} ({hw}, {self.head.num_classes} classes; reached by {minimum.arch.encode()})")

    def describe(self) -> dict[str, Any]:
        """JSON-able description: what a run must agree on to be resumed."""
        budgets = []
        for b in self.budgets:
            cal = b.predictor.calibration
            budgets.append({"profile": b.profile, "budget_ms": b.budget_ms, "kind": b.predictor.kind,
                            "runtime_version": b.predictor.runtime_version,
                            "calibration": None if cal is None else {"a": cal.a, "b": cal.b}})
        return {"budgets": budgets, "resolution": list(self._hw), "num_classes": self.head.num_classes,
                "head": _head_json(self.head), "width_multiplier": self.width_multiplier,
                "max_madds": self.max_madds, "max_params": self.max_params}


def _head_json(head: SSDLiteHead) -> dict[str, Any]:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(head).items()}


def _number(value: float) -> str:
    """`1.0`, `7.0`, `6.85`: at least one decimal, no float noise."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _ms(value: float, limit: float) -> str:
    """Two decimals, more if rounding would make an unreachable value look within the limit."""
    for digits in (2, 3, 4, 6):
        text = f"{value:.{digits}f}"
        if float(text) > limit or value <= limit:
            return text
    return repr(value)


__all__ = ["Budget", "BudgetUnreachableError", "Constraints", "Measures"]
