"""tdbnas.search: the weight-sharing supernet, BN recalibration and latency-constrained
evolutionary search (the search issue).

    >>> from tdbnas.latency.profiles import get_predictor                            # doctest: +SKIP
    >>> from tdbnas.search import Budget, Constraints, SearchSettings, run_search
    >>> space = get_space("tdb")
    >>> edgetpu = get_predictor("edgetpu", 320, space=space)
    >>> constraints = Constraints([Budget(edgetpu, 7.0)], resolution=320)
    >>> result = run_search(space, fitness, constraints, SearchSettings(seed=0), "runs/search")
    >>> result.best.arch, result.best.latency_ms

`fitness` is any `arch -> {"mAP": ...}` function, an object with `evaluate(arch)` (the supernet
evaluator), or an evaluator from `tdbnas.search.parallel` (`make_evaluator(factory, ray=...)`).

The names below are loaded on first use (PEP 562), so `tdbnas --help` and the CLI's argument
parsing do not pay for numpy and the latency predictor.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of this package that defines it.
_EXPORTS = {
    "Budget": "constraints", "BudgetUnreachableError": "constraints", "Constraints": "constraints",
    "Measures": "constraints",
    "Proposer": "evolution", "SearchResult": "evolution", "generation_rng": "evolution", "load_result": "evolution",
    "run_search": "evolution",
    "Minimum": "minimum", "max_cost": "minimum", "min_cost": "minimum", "min_latency": "minimum",
    "crowding_distance": "pareto", "nondominated_ranks": "pareto", "nsga2_order": "pareto", "pareto_front": "pareto",
    "RayEvaluator": "parallel", "SerialEvaluator": "parallel", "SupernetFactory": "parallel", "as_fitness": "parallel",
    "make_evaluator": "parallel", "ray_available": "parallel",
    "Candidate": "rundb", "Evaluation": "rundb", "RunDB": "rundb", "RunDBError": "rundb",
    "ALGORITHMS": "settings", "SearchSettings": "settings",
    "SyntheticFitness": "synthetic",
    "Supernet": "supernet", "sample_path": "supernet", "supernet_size": "supernet",
    "SupernetEvaluator": "fitness",
    "SupernetTrainConfig": "supernet_train", "SupernetTrainer": "supernet_train",
    "RecalibrationSettings": "recalibration", "recalibrate_bn": "recalibration",
    "SearchSplit": "splits",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tdbnas.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tdbnas.search.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)  # resolved by __getattr__
