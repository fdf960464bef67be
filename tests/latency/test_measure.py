"""The measurement protocol with scripted runners: what it asks the runner for, when it re-measures,
what it keeps, and how it combines attempts. No TensorFlow or LiteRT needed."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tdbnas.latency import device_agent
from tdbnas.latency.measure import (
    MeasureProtocol,
    block_spread,
    compute,
    measure,
    spread_of,
)
from tdbnas.latency.runners.base import Runner, Timing

QUICK = dict(min_seconds=0.0, max_spread=0.05)


class ScriptedRunner(Runner):
    """Returns the next scripted attempt on each timing call and records what it was asked."""

    name = "scripted"

    def __init__(self, attempts):
        self.attempts = list(attempts)
        self.calls = []

    def environment(self):
        return {"runtime_version": "scripted 1"}

    def time_model(self, model, *, warmup, runs, signature=None):
        raise AssertionError("the protocol must call timing()")

    def timing(self, model, *, warmup, runs, min_seconds=0.0, max_runs=None, signature=None):
        self.calls.append({"model": model, "warmup": warmup, "runs": runs, "min_seconds": min_seconds,
                           "max_runs": max_runs, "signature": signature})
        script = self.attempts.pop(0)
        return script if isinstance(script, Timing) else Timing(tuple(script))


def attempt(level, n=20, noise=0.5, seed=0):
    """n runs whose minimum is exactly `level` (the rest up to `noise` * level slower)."""
    rng = np.random.default_rng(seed)
    runs = level * (1 + noise * rng.random(n))
    runs[rng.integers(n)] = level
    return list(runs)


def test_protocol_parameters_reach_the_runner():
    runner = ScriptedRunner([attempt(1.0), attempt(1.0, seed=1)])
    protocol = MeasureProtocol(warmup=7, runs=13, min_seconds=0.2, max_runs=400)
    measure(runner, Path("m.tflite"), protocol, signature="unit_3")
    assert runner.calls == [{"model": Path("m.tflite"), "warmup": 7, "runs": 13, "min_seconds": 0.2,
                             "max_runs": 400, "signature": "unit_3"}] * 2


def test_two_agreeing_attempts_need_no_remeasure():
    runner = ScriptedRunner([attempt(1.00), attempt(1.02, seed=1), attempt(9.0)])
    result = measure(runner, "m", MeasureProtocol(**QUICK))
    assert len(result.attempts) == 2 and result.remeasures == 0 and len(runner.attempts) == 1
    assert result.value_ms == pytest.approx(1.0)
    assert result.spread == pytest.approx(0.02)
    assert result.environment["converged"] is True


def test_disagreeing_attempts_are_remeasured_until_two_agree():
    # The first attempt fell into a slow phase (+30 %): a third attempt confirms the fast level.
    runner = ScriptedRunner([attempt(1.3), attempt(1.0, seed=1), attempt(1.01, seed=2), attempt(5.0)])
    result = measure(runner, "m", MeasureProtocol(**QUICK, max_remeasures=3))
    assert len(runner.calls) == 3 and result.remeasures == 1
    assert result.value_ms == pytest.approx(1.0)
    assert result.spread == pytest.approx(0.01)
    assert [a["value_ms"] for a in result.environment["attempts"]] == pytest.approx([1.3, 1.0, 1.01])


def test_remeasuring_stops_at_the_limit_and_says_so():
    runner = ScriptedRunner([attempt(1.0 + 0.2 * i, seed=i) for i in range(10)])
    result = measure(runner, "m", MeasureProtocol(**QUICK, attempts=2, max_remeasures=2))
    assert len(runner.calls) == 4 and result.remeasures == 2
    assert result.environment["converged"] is False
    assert result.spread == pytest.approx(0.2)
    assert result.value_ms == pytest.approx(1.0)


def test_every_raw_sample_is_kept_and_the_value_is_recomputable():
    scripts = [attempt(1.3, n=15), attempt(1.0, n=25, seed=1), attempt(1.0, n=10, seed=2)]
    expected = [v for script in scripts for v in script]
    for statistic in ("min", "median", "p10", "trimmed_mean", "mean"):
        runner = ScriptedRunner([list(s) for s in scripts])
        result = measure(runner, "m", MeasureProtocol(min_seconds=0.0, statistic=statistic, max_spread=0.0,
                                                      max_remeasures=1))
        assert list(result.samples_ms) == pytest.approx(expected)
        assert result.value_ms == pytest.approx(compute(statistic, expected))
        assert result.statistic == statistic


def test_measurement_fits_the_latency_table(tmp_path):
    """What profiling stores: samples, spread and a JSON environment, accepted by the table."""
    from tdbnas.latency.table import LatencyTable

    result = measure(ScriptedRunner([attempt(1.0), attempt(1.01, seed=1)]), "m", MeasureProtocol(**QUICK))
    json.dumps(result.environment)
    table = LatencyTable(tmp_path / "t.sqlite")
    table.ensure_profile("cpu", kind="measured", runner="scripted")
    entry = table.put("cpu", "scripted 1", "k", result.value_ms, statistic=result.statistic, spread=result.spread,
                      samples=result.samples_ms, environment=result.environment)
    assert entry.samples == pytest.approx(result.samples_ms) and entry.environment["source"] == "samples"


def test_summary_only_runner_is_combined_from_its_summaries():
    """benchmark_model prints aggregates only: the minimum of the attempts' minima is exact."""
    runner = ScriptedRunner([Timing(summary_ms={"min": 1.3, "avg": 1.5, "median": 1.4}, count=50),
                             Timing(summary_ms={"min": 1.0, "avg": 1.2, "median": 1.1}, count=50),
                             Timing(summary_ms={"min": 1.02, "avg": 1.1, "median": 1.05}, count=150)])
    result = measure(runner, "m", MeasureProtocol(**QUICK))
    assert result.value_ms == pytest.approx(1.0) and result.samples_ms == ()
    assert result.environment["source"] == "summary" and len(result.attempts) == 3
    assert result.environment["attempts"][1]["summary_ms"]["avg"] == 1.2

    runner = ScriptedRunner([Timing(summary_ms={"min": 1.0, "avg": 2.0}, count=10),
                             Timing(summary_ms={"min": 1.0, "avg": 1.0}, count=30)])
    protocol = MeasureProtocol(min_seconds=0.0, statistic="mean", max_spread=1.0)
    assert measure(runner, "m", protocol).value_ms == pytest.approx(1.25)  # weighted by run count


def test_summary_without_the_statistic_names_the_fix():
    runner = ScriptedRunner([Timing(summary_ms={"min": 1.0, "avg": 1.2}, count=50)])
    with pytest.raises(ValueError, match="statistic='min'"):
        measure(runner, "m", MeasureProtocol(**QUICK, statistic="p10"))


def test_single_attempt_uses_the_block_spread():
    # One attempt whose last quarter was disturbed throughout: its block minima disagree.
    disturbed = [1.0] * 30 + [1.5] * 10
    runner = ScriptedRunner([disturbed, [1.0] * 40, [1.0] * 40])
    result = measure(runner, "m", MeasureProtocol(**QUICK, attempts=1, max_remeasures=2))
    assert block_spread(disturbed, "min") == pytest.approx(0.5)
    assert len(runner.calls) == 2 and result.spread == 0.0
    quiet = ScriptedRunner([[1.0] * 40])
    assert len(measure(quiet, "m", MeasureProtocol(**QUICK, attempts=1)).attempts) == 1


def test_spread_definitions():
    attempts = [SimpleNamespace(value_ms=v) for v in (1.3, 1.0, 1.1)]
    assert spread_of(attempts, "min") == pytest.approx(0.1)
    assert spread_of(attempts[:1], "min") is None
    assert block_spread([1.0] * 5, "min") is None  # too few runs to cut into blocks


def test_statistics_by_name():
    samples = [float(v) for v in range(1, 101)]
    assert compute("min", samples) == 1.0
    assert compute("median", samples) == 50.5
    assert compute("p10", samples) == pytest.approx(np.percentile(samples, 10))
    assert compute("trimmed_mean", samples) == pytest.approx(np.mean(samples[10:90]), abs=0.6)
    for bad in ("p0", "p100", "fastest", "pxx"):
        with pytest.raises(ValueError):
            compute(bad, samples)
    with pytest.raises(ValueError):
        compute("min", [])


def test_protocol_validation():
    assert MeasureProtocol().statistic == "min"
    with pytest.raises(ValueError, match="unknown statistic"):
        MeasureProtocol(statistic="mode")
    with pytest.raises(ValueError, match="max_runs"):
        MeasureProtocol(runs=100, max_runs=50)
    with pytest.raises(ValueError):
        MeasureProtocol(warmup=-1)
    with pytest.raises(ValueError):
        Timing(samples_ms=(1.0, math.nan))
    with pytest.raises(ValueError):
        Timing()


class TimeModelOnly:
    """A duck-typed runner with only `time_model` (1 ms per run): the Runner's default timing
    tops the runs up to `min_seconds`, bounded by `max_runs`."""

    def __init__(self):
        self.calls = []

    def time_model(self, model, *, warmup, runs, signature=None):
        self.calls.append((warmup, runs))
        return [1.0] * runs


def test_default_timing_tops_up_to_min_seconds():
    runner = TimeModelOnly()
    result = measure(runner, "m", MeasureProtocol(warmup=3, runs=5, min_seconds=0.03, max_runs=20, attempts=1))
    assert runner.calls == [(3, 5), (3, 15)]  # 5 ms, then 15 more runs (25 would pass max_runs=20)
    assert len(result.samples_ms) == 20


class CountingInvoke:
    """Stands for an interpreter: counts calls and advances a fake clock by `step_ns` per call."""

    def __init__(self, step_ns):
        self.calls, self.now, self.step = 0, 0, step_ns

    def __call__(self):
        self.calls += 1
        self.now += self.step

    def clock(self):
        return self.now


def test_timing_loop_honours_warmup_runs_and_duration(monkeypatch):
    invoke = CountingInvoke(step_ns=1_000_000)  # 1 ms per run
    monkeypatch.setattr(device_agent, "time", SimpleNamespace(perf_counter_ns=invoke.clock))
    samples = device_agent.timed_runs(invoke, warmup=5, runs=10)
    assert invoke.calls == 15 and samples == [1.0] * 10  # warm-up runs are run, not returned
    invoke.calls = 0
    samples = device_agent.timed_runs(invoke, warmup=2, runs=10, min_seconds=0.05)
    assert invoke.calls == 52 and len(samples) == 50  # kept going to 50 ms
    invoke.calls = 0
    samples = device_agent.timed_runs(invoke, warmup=0, runs=10, min_seconds=1.0, max_runs=30)
    assert invoke.calls == 30 and len(samples) == 30  # ... but not past max_runs


def test_profiling_with_the_real_protocol(tmp_path):
    """profile_units' default measurer is this module: entries carry its samples and environment."""
    from tdbnas.latency.profiling import profile_units
    from tdbnas.latency.table import LatencyTable
    from tdbnas.latency.units import detector_units
    from tdbnas.spaces import get_reference

    units = detector_units(get_reference("mobiledet-edgetpu").arch, 320)[:3]

    def builder(chunk, cache_dir):
        cache_dir.mkdir(parents=True, exist_ok=True)
        out = {}
        for index, unit in enumerate(chunk):
            path = cache_dir / f"{index}.tflite"
            path.write_text(unit.key)
            out[unit.key] = SimpleNamespace(path=path, signature=None)
        return out

    class Fake(Runner):
        name = "fake"

        def environment(self):
            return {"runtime_version": "fake 1", "threads": 1}

        def time_model(self, model, *, warmup, runs, signature=None):
            return [0.5 + 0.01 * i for i in range(runs)]

    table = LatencyTable(tmp_path / "t.sqlite")
    report = profile_units(units, table=table, profile="cpu", runner=Fake(), cache_dir=tmp_path / "mm",
                           protocol=MeasureProtocol(min_seconds=0.0, runs=20), progress=False, builder=builder)
    assert report.measured == len({u.key for u in units})
    entry = table.get("cpu", units[0].key)
    assert entry.value_ms == pytest.approx(0.5) and entry.statistic == "min" and len(entry.samples) == 40
    assert entry.environment["protocol"]["runs"] == 20 and entry.environment["runtime_version"] == "fake 1"
