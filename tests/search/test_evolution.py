"""The DetNAS evolution, random search and Pareto mode: generation arithmetic, operators,
de-duplication, determinism, search quality on a structured landscape, and the outputs."""

import json
import math
import random

import numpy as np
import pytest

from tdbnas.search import (
    Budget,
    Constraints,
    SearchSettings,
    SyntheticFitness,
    crowding_distance,
    nondominated_ranks,
    nsga2_order,
    pareto_front,
    run_search,
)
from tdbnas.search.rundb import RunDB

RES = 320
SMALL = {"population": 12, "parents": 4, "mutations": 4, "crossovers": 4, "generations": 3}


def hamming(a, b):
    return sum(x != y for x, y in zip(a, b))


def top_k(evaluations, k):
    return sorted(evaluations, key=lambda e: (-e.score, e.generation, e.position))[:k]


def test_defaults_are_the_detnas_settings():
    s = SearchSettings()
    assert (s.population, s.parents, s.mutations, s.crossovers, s.mutation_prob, s.generations) == \
        (50, 10, 20, 20, 0.1, 20)
    assert s.random_per_generation == 10 and s.evaluation_budget == 1000


def test_generation_arithmetic_and_operators_follow_detnas(tmp_path, tdb, tdb_predictors, counting):
    constraints = Constraints([Budget(tdb_predictors["edgetpu"], 40.0)], resolution=RES)  # loose: all feasible
    fitness = counting(tdb)
    result = run_search(tdb, fitness, constraints, SearchSettings(generations=3, seed=1), tmp_path)
    with RunDB(tmp_path / "search.sqlite") as db:
        plans = [db.planned(g) for g in range(3)]
    assert [c.origin for c in plans[0]] == ["random"] * 50
    for g in (1, 2):
        # 50 = 10 parents -> 20 mutations + 20 crossovers + 10 random
        assert [c.origin for c in plans[g]] == ["mutation"] * 20 + ["crossover"] * 20 + ["random"] * 10
        parents = top_k([e for e in result.evaluations if e.generation < g], 10)
        genomes = [p.genome for p in parents]
        distances = []
        for child in plans[g]:
            if child.origin == "mutation":
                distance = min(hamming(child.genome, p) for p in genomes)
                assert distance >= 1
                distances.append(distance)
            elif child.origin == "crossover":  # uniform: every gene from one of two parents
                assert any(all(x in (a[i], b[i]) for i, x in enumerate(child.genome))
                           for a in genomes for b in genomes if a != b)
        # 29 genes at p = 0.1: about 2.9 changes from the parent
        assert 1.0 <= np.mean(distances) <= 6.0
    assert len(fitness.calls) == 150 == len(set(fitness.calls)) == len(result.evaluations)


def test_nothing_is_evaluated_twice_and_a_small_space_runs_out(tiny, lut, counting):
    from tdbnas.latency.profiles import get_predictor

    constraints = Constraints([Budget(get_predictor("dsp", RES, space=tiny, table=lut), 1000.0)], resolution=RES)
    fitness = counting(tiny)
    result = run_search(tiny, fitness, constraints, SearchSettings(seed=3))  # 1000 evaluations > 768 members
    assert len(fitness.calls) == len(set(fitness.calls)) == tiny.size() == 768
    assert result.exhausted and len(result.evaluations) == 768
    assert {tiny.decode(e.genome).encode() for e in result.evaluations} == set(fitness.calls)


def test_random_search_spends_the_same_budget_on_random_members(tdb, tdb_predictors, counting):
    constraints = Constraints([Budget(tdb_predictors["edgetpu"], 12.0)], resolution=RES)
    settings = SearchSettings(algorithm="random", **SMALL)
    result = run_search(tdb, counting(tdb), constraints, settings)
    assert len(result.evaluations) == settings.evaluation_budget == 36
    assert {e.origin for e in result.evaluations} == {"random"}


def test_same_seed_same_search_and_other_seeds_differ(tdb, tdb_predictors):
    constraints = Constraints([Budget(tdb_predictors["edgetpu"], 12.0)], resolution=RES)
    fitness = SyntheticFitness(tdb, seed=0)
    runs = [run_search(tdb, fitness, constraints, SearchSettings(seed=seed, **SMALL)) for seed in (4, 4, 5)]
    key = [[(e.arch, e.score, e.generation, e.position) for e in run.evaluations] for run in runs]
    assert key[0] == key[1] and key[0] != key[2]


def test_evolution_beats_random_search_on_a_structured_fitness(tdb, tdb_predictors):
    """Same evaluation budget, several seeds: the evolution exploits the landscape's structure."""
    constraints = Constraints([Budget(tdb_predictors["edgetpu"], 12.0)], resolution=RES)
    fitness = SyntheticFitness(tdb, seed=11)
    common = {"population": 16, "parents": 4, "mutations": 6, "crossovers": 6, "generations": 7}
    best = {"evolution": [], "random": []}
    for seed in range(3):
        for algorithm in best:
            result = run_search(tdb, fitness, constraints, SearchSettings(algorithm=algorithm, seed=seed, **common))
            best[algorithm].append(result.best.score)
    wins = sum(e > r for e, r in zip(best["evolution"], best["random"]))
    assert wins >= 2 and np.mean(best["evolution"]) > np.mean(best["random"]), best


def brute_force_front(acc, lat):
    n = len(acc)
    return sorted(i for i in range(n) if not any(
        acc[j] >= acc[i] and lat[j] <= lat[i] and (acc[j] > acc[i] or lat[j] < lat[i]) for j in range(n)))


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_and_ranks_match_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randrange(1, 60)
    acc = [rng.randrange(8) / 8 for _ in range(n)]  # coarse values: many ties
    lat = [rng.randrange(10) * 0.5 for _ in range(n)]
    front = pareto_front(acc, lat)
    assert sorted(front) == brute_force_front(acc, lat)
    assert [lat[i] for i in front] == sorted(lat[i] for i in front)
    ranks = nondominated_ranks(acc, lat)
    remaining, rank = list(range(n)), 0
    while remaining:  # peel fronts one by one
        layer = [remaining[i] for i in brute_force_front([acc[j] for j in remaining], [lat[j] for j in remaining])]
        assert all(ranks[i] == rank for i in layer)
        remaining = [i for i in remaining if i not in layer]
        rank += 1
    order = nsga2_order(acc, lat)
    assert sorted(order) == list(range(n)) and [ranks[i] for i in order] == sorted(ranks)


def test_crowding_distance_keeps_the_boundaries():
    distance = crowding_distance([0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 4.0, 8.0])
    assert math.isinf(distance[0]) and math.isinf(distance[3])
    # middle points: (0.3 - 0.1) / 0.3 + (4 - 1) / 7 and (0.4 - 0.2) / 0.3 + (8 - 2) / 7
    assert distance[1] == pytest.approx(2 / 3 + 3 / 7) and distance[2] == pytest.approx(2 / 3 + 6 / 7)


def test_pareto_search_returns_the_front_of_everything_evaluated(tdb, tdb_predictors):
    constraints = Constraints([Budget(tdb_predictors["dsp"], 25.0), Budget(tdb_predictors["edgetpu"], 12.0)],
                              resolution=RES)
    settings = SearchSettings(algorithm="pareto", pareto_profile="edgetpu", **SMALL)
    result = run_search(tdb, SyntheticFitness(tdb, seed=2), constraints, settings)
    acc = [e.score for e in result.evaluations]
    lat = [e.latency_ms["edgetpu"] for e in result.evaluations]
    assert sorted(result.evaluations.index(e) for e in result.front) == brute_force_front(acc, lat)
    assert [e.score for e in result.front] == sorted(e.score for e in result.front)
    assert result.best.score == max(acc) and result.front[-1].score == max(acc)
    # generation 1's parents were the NSGA-II top 4 of generation 0
    first = [e for e in result.evaluations if e.generation == 0]
    parents = [first[i].genome for i in nsga2_order([e.score for e in first],
                                                    [e.latency_ms["edgetpu"] for e in first])[:4]]
    for child in (e for e in result.evaluations if e.generation == 1 and e.origin == "mutation"):
        assert min(hamming(child.genome, p) for p in parents) >= 1
        assert min(hamming(child.genome, p) for p in parents) <= 10


def test_outputs_are_written_next_to_the_run_database(tmp_path, tdb, tdb_predictors):
    constraints = Constraints([Budget(tdb_predictors["edgetpu"], 9.0), Budget(tdb_predictors["dsp"], 25.0)],
                              resolution=RES)
    result = run_search(tdb, SyntheticFitness(tdb, seed=1), constraints, SearchSettings(seed=2, **SMALL), tmp_path)
    assert (tmp_path / "best_arch.txt").read_text() == result.best.arch + "\n"
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["best"]["arch"] == result.best.arch and record["best"]["fitness"]["mAP"] == result.best.score
    assert set(record["best"]["latency_ms"]) == {"edgetpu", "dsp"} and record["best"]["latency_ms"]["edgetpu"] <= 9
    assert record["best"]["madds"] > 0 and record["best"]["params"] > 0
    assert record["evaluations"] == 36 and record["settings"]["seed"] == 2 and record["seeds"]["search"] == 2
    assert [b["budget_ms"] for b in record["constraints"]["budgets"]] == [9.0, 25.0]
    png = (tmp_path / "search.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["settings"]["population"] == 12 and config["space"]["name"] == "tdb"
    assert not list(tmp_path.glob(".*.tmp"))


def test_fitness_must_hold_a_finite_metric(tdb, tdb_predictors):
    constraints = Constraints([Budget(tdb_predictors["edgetpu"], 12.0)], resolution=RES)
    settings = SearchSettings(**SMALL)
    with pytest.raises(KeyError, match="has no 'mAP' .*keys: AP50"):
        run_search(tdb, lambda arch: {"AP50": 0.3}, constraints, settings)
    with pytest.raises(ValueError, match="non-finite"):
        run_search(tdb, lambda arch: {"mAP": float("nan")}, constraints, settings)
    result = run_search(tdb, lambda arch: {"AP50": len(arch.encode()) / 1000}, constraints,
                        SearchSettings(metric="AP50", **SMALL))
    assert result.best.score == max(len(e.arch) for e in result.evaluations) / 1000


def test_settings_are_checked():
    with pytest.raises(ValueError, match="exceed the population"):
        SearchSettings(population=30)
    with pytest.raises(ValueError, match="unknown search algorithm"):
        SearchSettings(algorithm="bayes")
    with pytest.raises(ValueError, match="unknown search setting"):
        SearchSettings.from_dict({"popsize": 3})
    assert SearchSettings.from_dict(SearchSettings(seed=7).to_dict()) == SearchSettings(seed=7)
