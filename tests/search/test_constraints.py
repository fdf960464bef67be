"""Constraints: the exact minimum latency / MAdds / params of a space against brute force, early
detection of unreachable budgets, and feasibility of everything that gets evaluated."""

import re

import numpy as np
import pytest

from tdbnas.latency.predictor import LatencyPredictor
from tdbnas.latency.profiles import get_predictor
from tdbnas.latency.table import Calibration, Entry, LatencyTable
from tdbnas.latency.units import space_units
from tdbnas.search import (
    Budget,
    BudgetUnreachableError,
    Constraints,
    SearchSettings,
    min_cost,
    min_latency,
    run_search,
)
from tdbnas.spaces import InfeasibleError, SSDLiteHead, detector_cost

RES = 320
TINY_SETTINGS = {"population": 4, "parents": 2, "mutations": 1, "crossovers": 1}
VARIANTS = {
    "plain": {},
    # hard-swish is not an Edge TPU op: everything after its first use falls back to the CPU
    # (a whole-model term the DP carries as a mode)
    "hswish": {"b2_ops": ("ir_k3_e4", "ir_k3_e4_hs")},
    # every member holds more than the 7.5 MiB parameter cache: streaming is never zero
    "streaming": {"c5_widths": (512, 640), "c5_ops": ("ir_k3_e8",), "c5_layers": 3},
}


def brute_force_min(predictor, space, all_members, resolution=RES, head=None, wm=1.0):
    head = head or SSDLiteHead()
    values = predictor.predict_many(all_members(space), resolution, head=head, width_multiplier=wm)
    return float(values.min()), values


@pytest.mark.parametrize("variant, profile, wm", [
    ("plain", "edgetpu", 1.0), ("plain", "dsp", 0.75), ("hswish", "edgetpu", 1.0), ("hswish", "dsp", 1.0),
    ("streaming", "edgetpu", 1.0),
])
def test_min_latency_is_the_brute_force_minimum(lut, make_tiny, members, variant, profile, wm):
    space = make_tiny(f"tiny-{variant}", **VARIANTS[variant])
    all_members = members
    head = SSDLiteHead(num_classes=20)
    predictor = get_predictor(profile, RES, space=space, table=lut, head=head, width_multiplier=wm)
    expected, values = brute_force_min(predictor, space, all_members, head=head, wm=wm)
    found = min_latency(space, predictor, RES, head=head, width_multiplier=wm)
    assert found.exact
    assert found.value == pytest.approx(expected, rel=1e-9)
    assert found.lower == pytest.approx(expected, rel=1e-9)
    assert space.contains(found.arch)
    assert predictor.predict_many([found.arch], RES, head=head, width_multiplier=wm)[0] == pytest.approx(expected)
    assert np.sum(values <= expected * (1 + 1e-9)) >= 1
    if variant != "plain" and profile == "edgetpu":  # the whole-model term is really exercised
        whole = [predictor.predict(arch, RES, head=head, width_multiplier=wm).whole_model_ms
                 for arch in all_members(space)[::37]]
        assert max(whole) > 0.1


def test_min_latency_applies_the_calibration_of_a_measured_table(tmp_path, tiny, members):
    table = LatencyTable(tmp_path / "lut.sqlite")
    rng = np.random.default_rng(3)
    table.ensure_profile("phone", kind="measured", runner="fake", environment={"device": "cpu"})
    table.put_many(Entry("phone", "v1", u.key, float(rng.uniform(0.05, 3.0)), "median", None, (), {}, "t")
                   for u in space_units(tiny, RES))
    table.set_calibration("phone", Calibration(1.7, 2.5, "v1"))
    predictor = LatencyPredictor(table, "phone")
    expected, _ = brute_force_min(predictor, tiny, members)
    found = min_latency(tiny, predictor, RES)
    assert found.exact and found.value == pytest.approx(expected, rel=1e-12)
    raw = LatencyPredictor(table, "phone", calibrated=False)
    assert found.value == pytest.approx(1.7 * raw.predict_many([found.arch], RES)[0] + 2.5)


def test_min_latency_names_missing_entries(tmp_path, tiny):
    table = LatencyTable(tmp_path / "lut.sqlite")
    units = sorted(space_units(tiny, RES), key=lambda u: u.key)
    table.ensure_profile("phone", kind="measured", runner="fake", environment={"device": "cpu"})
    table.put_many(Entry("phone", "v1", u.key, 1.0, "median", None, (), {}, "t") for u in units[5:])
    with pytest.raises(KeyError, match="no entry for .* tdbnas profile"):
        min_latency(tiny, LatencyPredictor(table, "phone"), RES)


@pytest.mark.parametrize("quantity, wm", [("madds", 1.0), ("params", 1.0), ("madds", 0.75), ("params", 0.75)])
def test_min_cost_is_the_brute_force_minimum(tiny, members, quantity, wm):
    head = SSDLiteHead(num_classes=7)
    costs = [getattr(detector_cost(arch, RES, num_classes=7, width_multiplier=wm, head=head).total, quantity)
             for arch in members(tiny)]
    found = min_cost(tiny, quantity, RES, head=head, width_multiplier=wm)
    assert found.exact and found.value == min(costs)
    assert getattr(detector_cost(found.arch, RES, num_classes=7, width_multiplier=wm, head=head).total,
                   quantity) == min(costs)


def test_tdb_minimum_is_below_every_sample(tdb, tdb_predictors):
    for predictor in tdb_predictors.values():
        found = min_latency(tdb, predictor, RES)
        samples = predictor.predict_many([tdb.sample(seed) for seed in range(300)], RES)
        assert found.exact and found.value < samples.min()


def test_unreachable_budget_is_reported_before_any_evaluation(tmp_path, lut, tiny, counting):
    predictor = get_predictor("edgetpu", RES, space=tiny, table=lut)
    smallest = min_latency(tiny, predictor, RES).value
    fitness = counting(tiny)
    constraints = Constraints([Budget(predictor, smallest * 0.999)], resolution=RES)
    with pytest.raises(BudgetUnreachableError) as info:
        run_search(tiny, fitness, constraints, SearchSettings(generations=2, **TINY_SETTINGS), tmp_path / "run")
    assert fitness.calls == [] and not (tmp_path / "run").exists()
    message = str(info.value)
    match = re.match(r"no architecture of space tiny fits edgetpu ≤ ([\d.]+) ms: the smallest predicted latency is "
                     r"([\d.]+) ms \(modelled profile, 320x320, 90 classes; reached by \S+\)$", message)
    assert match, message
    assert float(match.group(2)) == pytest.approx(smallest, abs=0.005) and float(match.group(2)) > float(match.group(1))
    assert info.value.minimum.value == pytest.approx(smallest)

    # At exactly the minimum the budget is reachable, and the search finds the fastest member.
    fitness = counting(tiny)
    result = run_search(tiny, fitness, Constraints([Budget(predictor, smallest)], resolution=RES),
                        SearchSettings(generations=3, **TINY_SETTINGS))
    assert result.best.latency_ms["edgetpu"] == pytest.approx(smallest)
    assert all(e.latency_ms["edgetpu"] <= smallest for e in result.evaluations)
    assert result.exhausted


def test_unreachable_madds_limit_is_reported(tiny, lut):
    predictor = get_predictor("dsp", RES, space=tiny, table=lut)
    smallest = min_cost(tiny, "madds", RES).value
    constraints = Constraints([Budget(predictor, 100.0)], resolution=RES, max_madds=smallest - 1)
    with pytest.raises(BudgetUnreachableError, match=r"no architecture of space tiny has ≤ [\d,]+ MAdds: the smallest "
                                                     r"detector has [\d,]+"):
        constraints.check_reachable(tiny)
    Constraints([Budget(predictor, 100.0)], resolution=RES, max_madds=smallest).check_reachable(tiny)


def test_budgets_reachable_alone_but_not_together_fail_when_sampling(tiny, lut, members, counting):
    edgetpu = get_predictor("edgetpu", RES, space=tiny, table=lut)
    fastest = min_latency(tiny, edgetpu, RES)
    smallest = min_cost(tiny, "params", RES)
    fast_params = detector_cost(fastest.arch, RES).total.params
    assert fast_params > smallest.value  # the fastest member is not the smallest: the budgets conflict
    everything = members(tiny)
    lat = edgetpu.predict_many(everything, RES)
    together = [a for a, ms in zip(everything, lat)
                if ms <= fastest.value and detector_cost(a, RES).total.params <= smallest.value]
    assert together == []
    constraints = Constraints([Budget(edgetpu, fastest.value)], resolution=RES, max_params=smallest.value)
    fitness = counting(tiny)
    with pytest.raises(InfeasibleError, match="each budget alone is reachable"):
        run_search(tiny, fitness, constraints, SearchSettings(generations=1, random_tries=500, **TINY_SETTINGS))
    assert fitness.calls == []


def test_infeasible_candidates_are_never_evaluated(tdb, tdb_predictors, counting):
    edgetpu, dsp = tdb_predictors["edgetpu"], tdb_predictors["dsp"]
    limits = {"edgetpu": 9.0, "dsp": 20.0, "madds": 1.5e9}
    samples = [tdb.sample(seed) for seed in range(100)]
    violating = ((edgetpu.predict_many(samples, RES) > limits["edgetpu"])
                 | (dsp.predict_many(samples, RES) > limits["dsp"]))
    assert 0.2 < violating.mean() < 0.95  # the constraints bind: a test that could fail

    problems = []

    def check(arch):
        if edgetpu.predict(arch, RES).total_ms > limits["edgetpu"] or dsp.predict(arch, RES).total_ms > limits["dsp"] \
                or detector_cost(arch, RES).total.madds > limits["madds"]:
            problems.append(arch.encode())

    fitness = counting(tdb, check=check)
    constraints = Constraints([Budget(edgetpu, limits["edgetpu"]), Budget(dsp, limits["dsp"])], resolution=RES,
                              max_madds=limits["madds"])
    settings = SearchSettings(population=16, parents=4, mutations=6, crossovers=6, generations=3, seed=5)
    result = run_search(tdb, fitness, constraints, settings)
    assert problems == [] and len(fitness.calls) == 48
    for e in result.evaluations:
        assert e.latency_ms["edgetpu"] == pytest.approx(edgetpu.predict_many([tdb.decode(e.genome)], RES)[0])
        assert e.latency_ms["edgetpu"] <= 9.0 and e.latency_ms["dsp"] <= 20.0 and e.madds <= 1.5e9


def test_constraint_arguments_are_checked(tdb_predictors):
    with pytest.raises(ValueError, match="positive"):
        Budget(tdb_predictors["edgetpu"], -1.0)
    with pytest.raises(ValueError, match="one budget"):
        Constraints([Budget(tdb_predictors["edgetpu"], 5.0), Budget(tdb_predictors["edgetpu"], 6.0)])
    with pytest.raises(KeyError, match="no latency constraint on profile 'cpu'"):
        Constraints([Budget(tdb_predictors["edgetpu"], 5.0)]).predictor("cpu")
