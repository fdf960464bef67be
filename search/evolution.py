"""Latency-constrained evolutionary, random and Pareto search over a `SearchSpace`.

The DetNAS evolution (megvii-model/DetNAS `search.py`; reference detnas_nasfpn.md §2.1):
generation 0 is `population` random members; every later generation takes the top `parents`
of *everything evaluated so far* (DetNAS `keep_top_k`), draws `mutations` mutants (each gene
re-drawn with probability `mutation_prob`) and `crossovers` uniform crossovers of two parents,
and fills the population with random members. Architectures already visited are rejected
(DetNAS `legal()`), so nothing is evaluated twice. Unlike DetNAS, the constraint is the
predicted latency of the whole detector on each device profile (plus optional MAdds/params),
checked in batches with `predict_many`; infeasible proposals are dropped before evaluation.

Random search draws `population` feasible members per generation: the same evaluation budget.
Pareto mode orders parents by NSGA-II rank on (metric up, latency on one profile down) and
returns the non-dominated front.

Determinism and resume. Generation g draws from its own RNG, seeded from (seed, g), and depends
only on the evaluations of generations < g, read in plan order (generation, position) and
sorted with explicit tie-breaks. So a generation's candidates are a pure function of the seed
and the committed results. A resumed run re-derives every generation from the run database:
planned candidates are checked against the stored plan, evaluations found in the database are
reused instead of re-run, and only the missing ones are evaluated. Results are keyed by
architecture, so neither a kill nor the order in which Ray workers finish changes the outcome.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.search.constraints import Constraints
from tdbnas.search.minimum import Minimum
from tdbnas.search.parallel import Evaluator, Result, SerialEvaluator
from tdbnas.search.pareto import nsga2_order, pareto_front
from tdbnas.search.rundb import DB_NAME, Candidate, Evaluation, RunDB
from tdbnas.search.settings import SearchSettings
from tdbnas.spaces import ArchSpec, InfeasibleError, SearchSpace
from tdbnas.spaces.atomic import write_json_atomic

Genome = tuple[int, ...]
#: Smallest batch of proposals scored with one `predict_many` call.
MIN_BATCH = 16
#: Proposals whose decoding and feasibility are remembered (small spaces revisit genomes often).
MEMO_SIZE = 200_000


def generation_rng(seed: int, generation: int) -> random.Random:
    """Generation g's RNG: a pure function of (seed, g), so any generation can be re-derived
    without replaying the draws of the ones before it (string seeds hash with SHA-512, stable
    across processes and Python versions)."""
    return random.Random(f"tdbnas-search:{seed}:{generation}")


def space_signature(space: SearchSpace) -> dict[str, Any]:
    describe = getattr(space, "to_description", None)
    if callable(describe):
        return describe()
    return {"name": space.name, "slots": [[slot.name, [str(c) for c in slot.choices]] for slot in space.slots]}


# ---- one generation ------------------------------------------------------------------------
class Proposer:
    """Chooses a generation's candidates: feasible, never seen before, in a fixed order."""

    def __init__(self, space: SearchSpace, constraints: Constraints, settings: SearchSettings):
        self.space, self.constraints, self.settings = space, constraints, settings
        self.front_profile = pareto_profile(settings, constraints)
        # genome -> architecture string, and the strings known to violate a constraint: the
        # constraints never change during a run, so a proposal drawn again costs a lookup.
        self._keys: dict[Genome, str] = {}
        self._infeasible: set[str] = set()

    def parents(self, history: Sequence[Evaluation]) -> list[Evaluation]:
        """The top `parents` of everything evaluated: by metric (DetNAS), or by NSGA-II order."""
        k = self.settings.parents
        if self.settings.algorithm == "pareto":
            order = nsga2_order([e.score for e in history], [e.latency_ms[self.front_profile] for e in history])
            return [history[i] for i in order[:k]]
        return sorted(history, key=lambda e: (-e.score, e.generation, e.position))[:k]

    def propose(self, generation: int, history: Sequence[Evaluation], seen: set[str]) -> list[Candidate]:
        s, space = self.settings, self.space
        rng = generation_rng(s.seed, generation)
        taken = set(seen)
        chosen: list[tuple[ArchSpec, Genome, str, dict[str, float]]] = []
        if generation > 0 and s.algorithm != "random" and history:
            parents = self.parents(history)
            self._fill(chosen, taken, s.mutations, s.mutations * s.operator_tries, "mutation",
                       lambda: space.mutate_genome(rng.choice(parents).genome, rng, s.mutation_prob))
            if len(parents) >= 2:
                def cross() -> Genome:
                    a, b = rng.sample(parents, 2)
                    return space.crossover_genomes(a.genome, b.genome, rng)
                self._fill(chosen, taken, s.crossovers, s.crossovers * s.operator_tries, "crossover", cross)
        self._fill(chosen, taken, s.population - len(chosen), s.random_tries, "random",
                   lambda: space.random_genome(rng))
        candidates = []
        for position, (arch, genome, origin, latency) in enumerate(chosen):
            madds, params = self.constraints.costs(arch)
            candidates.append(Candidate(generation, position, arch.encode(), genome, origin, latency, madds, params))
        return candidates

    def _fill(self, chosen: list, taken: set[str], need: int, max_tries: int, origin: str,
              make: Callable[[], Genome]) -> None:
        """Draw proposals until `need` new feasible ones are accepted or `max_tries` are spent.
        Proposals are scored in batches (one `predict_many` per profile per batch)."""
        tries = 0
        while need > 0 and tries < max_tries:
            batch: dict[str, tuple[ArchSpec, Genome]] = {}
            for _ in range(min(max_tries - tries, max(2 * need, MIN_BATCH))):
                genome = tuple(make())
                tries += 1
                key = self._keys.get(genome)
                if key is not None and (key in taken or key in batch or key in self._infeasible):
                    continue
                arch = self.space.decode(genome)
                if key is None:
                    if len(self._keys) >= MEMO_SIZE:
                        self._keys.clear()
                    key = self._keys[genome] = arch.encode()
                if key not in taken and key not in batch:
                    batch[key] = (arch, genome)
            if not batch:
                continue
            archs = [arch for arch, _ in batch.values()]
            mask, latencies = self.constraints.feasible(archs)
            for i, (key, (arch, genome)) in enumerate(batch.items()):
                if not mask[i]:
                    if len(self._infeasible) >= MEMO_SIZE:
                        self._infeasible.clear()
                    self._infeasible.add(key)
                elif need > 0:
                    taken.add(key)
                    chosen.append((arch, genome, origin, {p: float(v[i]) for p, v in latencies.items()}))
                    need -= 1


def pareto_profile(settings: SearchSettings, constraints: Constraints) -> str | None:
    """The latency axis of Pareto mode and of the reported front."""
    if settings.pareto_profile is not None:
        constraints.predictor(settings.pareto_profile)  # KeyError naming the profiles
        return settings.pareto_profile
    return constraints.profiles[0] if constraints.profiles else None


# ---- the result ----------------------------------------------------------------------------
@dataclass
class SearchResult:
    best: Evaluation
    evaluations: list[Evaluation]
    settings: SearchSettings
    front_profile: str | None
    front: list[Evaluation] = field(default_factory=list)
    generations_run: int = 0
    exhausted: bool = False
    minima: list[Minimum] = field(default_factory=list)
    resumed: bool = False
    evaluated_now: int = 0
    run_dir: Path | None = None

    def front_on(self, profile: str) -> list[Evaluation]:
        """The non-dominated evaluations on (metric, latency on `profile`), fastest first."""
        index = pareto_front([e.score for e in self.evaluations], [e.latency_ms[profile] for e in self.evaluations])
        return [self.evaluations[i] for i in index]

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "best": self.best.to_json(),
            "metric": s.metric,
            "algorithm": s.algorithm,
            "evaluations": len(self.evaluations),
            "evaluation_budget": s.evaluation_budget,
            "generations_run": self.generations_run,
            "exhausted": self.exhausted,
            "front_profile": self.front_profile,
            "front": [{"arch": e.arch, "score": e.score, "latency_ms": e.latency_ms, "generation": e.generation}
                      for e in self.front],
            "settings": s.to_dict(),
            "seeds": {"search": s.seed, "generation_rng": f"random.Random('tdbnas-search:{s.seed}:<generation>')"},
            "minima": [m.to_json() for m in self.minima],
            "resumed": self.resumed,
            "evaluated_in_last_session": self.evaluated_now,
        }


# ---- the search ----------------------------------------------------------------------------
def _score(fitness: Mapping[str, Any], metric: str, arch: str) -> float:
    if metric not in fitness:
        raise KeyError(f"the fitness of {arch} has no {metric!r} (keys: {', '.join(map(str, fitness)) or 'none'}); "
                       "set the metric to one of its keys")
    try:
        value = float(fitness[metric])
    except (TypeError, ValueError):
        raise ValueError(f"fitness[{metric!r}] of {arch} is not a number: {fitness[metric]!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"fitness[{metric!r}] of {arch} is {value}; a search cannot rank non-finite values")
    return value


def _as_evaluator(fitness: Any) -> tuple[Evaluator, bool]:
    """(evaluator, whether we own it): an `Evaluator` as is, anything else run serially."""
    if callable(getattr(fitness, "run", None)) and callable(getattr(fitness, "describe", None)):
        return fitness, False
    return SerialEvaluator(fitness), True


def run_search(space: SearchSpace, fitness: Any, constraints: Constraints,
               settings: SearchSettings | None = None, out: str | Path | None = None, *,
               log: Callable[[str], None] | None = None, details: Mapping[str, Any] | None = None,
               fitness_identity: Mapping[str, Any] | None = None, plot: bool = True) -> SearchResult:
    """Search `space` for the member with the highest `fitness(arch)[settings.metric]` within
    `constraints`; resume the run in `out` if there is one.

    `fitness` is a function `ArchSpec -> dict`, an object with `evaluate(arch)`, or an
    `Evaluator` from `tdbnas.search.parallel` (serial or Ray). With `out`, the run database,
    `config.json`, `result.json`, `best_arch.txt` and (unless `plot=False`) the plot are
    written there; without it the run lives in memory. `details` are stored in config.json.
    `fitness_identity` says what the fitness is (e.g. the accuracy signal and its supernet): it
    joins the run's signature, so a run directory never resumes with another fitness's scores.
    Raises `BudgetUnreachableError` before evaluating anything when a budget is below the
    smallest value the space can reach.
    """
    settings = settings or SearchSettings()
    say = log or (lambda message: None)
    proposer = Proposer(space, constraints, settings)
    if settings.algorithm == "pareto" and proposer.front_profile is None:
        raise ValueError("Pareto search needs a latency profile: give at least one latency constraint")
    minima = constraints.check_reachable(space)  # before anything is created or evaluated
    run_dir = None if out is None else Path(out)
    evaluator, own_evaluator = _as_evaluator(fitness)
    config = {"space": space_signature(space), "settings": settings.to_dict(), "constraints": constraints.describe(),
              "evaluator": evaluator.describe(), **dict(details or {})}
    signature = {"format": 1, "space": config["space"], "settings": settings.replay_signature(),
                 "constraints": config["constraints"]}
    if fitness_identity:
        signature["fitness"] = dict(fitness_identity)
    db = RunDB(":memory:" if run_dir is None else run_dir / DB_NAME)
    try:
        resumed = db.begin_run(signature, {"settings": settings.to_dict(), "status": "running"})
        if run_dir is not None:
            write_json_atomic(run_dir / "config.json", config)
        if resumed:
            say(f"resuming {run_dir}: {db.count()} evaluations in the run database")
        history: list[Evaluation] = []
        seen: set[str] = set()
        evaluated_now, exhausted, generations_run = 0, False, 0
        for generation in range(settings.generations):
            plan = proposer.propose(generation, history, seen)
            if not plan:
                if generation == 0:
                    raise InfeasibleError(
                        f"no member of space {space.name!r} within the constraints was found in "
                        f"{settings.random_tries} random draws: each budget alone is reachable, but they may not be "
                        "reachable together; relax one of them")
                exhausted = True
                say(f"generation {generation}: no unvisited feasible candidate left; stopping")
                break
            db.store_plan(generation, plan)
            done = db.get_many(c.arch for c in plan)
            todo = {c.arch: c for c in plan if c.arch not in done}

            def on_result(result: Result, todo: dict[str, Candidate] = todo, done: dict = done) -> None:
                candidate = todo[result.arch]
                score = _score(result.fitness, settings.metric, result.arch)
                db.add(Evaluation.of(candidate, result.fitness, score, result.seconds, result.worker))
                done[result.arch] = db.get(result.arch)  # the stored form: what a resume would read

            evaluator.run(list(todo), on_result)
            evaluated_now += len(todo)
            history.extend(done[c.arch] for c in plan)
            seen.update(c.arch for c in plan)
            generations_run = generation + 1
            say(_progress(generation, settings, plan, len(todo), history, proposer.front_profile))
        best = min(history, key=lambda e: (-e.score, e.generation, e.position))
        result = SearchResult(best, history, settings, proposer.front_profile, generations_run=generations_run,
                              exhausted=exhausted, minima=minima, resumed=resumed, evaluated_now=evaluated_now,
                              run_dir=run_dir)
        if result.front_profile is not None:
            result.front = result.front_on(result.front_profile)
        db.set_meta("result", result.to_json())
        db.set_meta("status", "finished")
    finally:
        db.close()
        if own_evaluator:
            evaluator.close()
    if run_dir is not None:
        from tdbnas.search.report import write_outputs

        write_outputs(run_dir, result, constraints, space_name=space.name, config=config, plot=plot)
    return result


def _progress(generation: int, settings: SearchSettings, plan: Sequence[Candidate], evaluated: int,
              history: Sequence[Evaluation], profile: str | None) -> str:
    origins = {}
    for c in plan:
        origins[c.origin] = origins.get(c.origin, 0) + 1
    mix = ", ".join(f"{n} {origin}" for origin, n in origins.items())
    best = min(history, key=lambda e: (-e.score, e.generation, e.position))
    latency = "" if profile is None else f", {profile} {best.latency_ms[profile]:.2f} ms"
    return (f"generation {generation + 1}/{settings.generations}: {len(plan)} candidates ({mix}), "
            f"{evaluated} evaluated, {len(plan) - evaluated} from the run database; "
            f"best {settings.metric} {best.score:.4f}{latency}")


def load_result(run_dir: str | Path) -> dict[str, Any]:
    """The `result.json` of a finished run."""
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the search in {run_dir} has not finished")
    return json.loads(path.read_text())


__all__ = ["Proposer", "SearchResult", "generation_rng", "load_result", "pareto_profile", "run_search",
           "space_signature"]
