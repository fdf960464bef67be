"""Search settings: one frozen dataclass, stored with every run.

The defaults are the DetNAS evolution (megvii-model/DetNAS `arch_search_config.py`, reproduced
by MMRazor's `detnas_frcnn_shufflenet_search_coco_1x.py`; reference detnas_nasfpn.md §2.1):
a population of 50 per generation, the top 10 of everything evaluated so far as parents, 20
mutants with a per-gene probability of 0.1, 20 uniform crossovers and 50 - 20 - 20 = 10 random
members, for 20 generations. Random search spends the same evaluation budget (population x
generations) on uniform feasible samples; Pareto mode keeps the evolution but picks parents by
non-dominated rank (accuracy up, latency on one profile down) and returns the whole front.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ALGORITHMS = ("evolution", "random", "pareto")

#: Settings that decide which candidates a run proposes. Resuming with a different value of
#: any of them would break the replay (see `tdbnas.search.evolution`), so the run database
#: refuses it; `generations` may change (a run can be extended or stopped earlier).
REPLAY_KEYS = ("algorithm", "population", "parents", "mutations", "crossovers", "mutation_prob", "seed",
               "metric", "pareto_profile", "operator_tries", "random_tries")


@dataclass(frozen=True)
class SearchSettings:
    algorithm: str = "evolution"
    population: int = 50            # DetNAS population_num
    parents: int = 10               # DetNAS select_num (top-k over everything evaluated)
    mutations: int = 20             # DetNAS mutation_num
    crossovers: int = 20            # DetNAS crossover_num
    mutation_prob: float = 0.1      # DetNAS m_prob, per gene
    generations: int = 20           # DetNAS max_epochs
    seed: int = 0
    #: The key of the fitness dict that is maximised (COCO mAP for the supernet evaluator).
    metric: str = "mAP"
    #: Latency axis of Pareto mode; None takes the first latency constraint's profile.
    pareto_profile: str | None = None
    #: Proposals a mutation or crossover step may draw per wanted child (DetNAS: 10 x num).
    operator_tries: int = 10
    #: Proposals the random fill of one generation may draw before giving up.
    random_tries: int = 10_000

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown search algorithm {self.algorithm!r} (one of: {', '.join(ALGORITHMS)})")
        for name in ("population", "generations", "operator_tries", "random_tries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("parents", "mutations", "crossovers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not 0.0 <= float(self.mutation_prob) <= 1.0:
            raise ValueError(f"mutation_prob must be in [0, 1], got {self.mutation_prob!r}")
        if self.mutations + self.crossovers > self.population:
            raise ValueError(f"mutations + crossovers ({self.mutations} + {self.crossovers}) exceed the population "
                             f"({self.population}); DetNAS fills the rest with random members")
        if self.algorithm != "random" and self.mutations + self.crossovers > 0 and self.parents < 1:
            raise ValueError("mutation and crossover need at least one parent (parents >= 1)")
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError("metric must name a key of the fitness dict, e.g. 'mAP'")

    @property
    def random_per_generation(self) -> int:
        """DetNAS: population - mutations - crossovers random members per generation (at least;
        the random fill also makes up for mutants and crossovers that could not be found)."""
        return self.population - self.mutations - self.crossovers

    @property
    def evaluation_budget(self) -> int:
        return self.population * self.generations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown search setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def replay_signature(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in REPLAY_KEYS}
