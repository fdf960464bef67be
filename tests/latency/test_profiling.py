"""Profiling: resume after a kill, no re-measuring, environment checks, end-to-end detector timing.

A fake builder writes one small file per unit and a fake runner derives a latency from it,
so these tests need neither TensorFlow nor LiteRT.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from tdbnas.latency.profiling import (
    check_compatible,
    detector_key,
    measure_detectors,
    profile_units,
    runtime_version_of,
)
from tdbnas.latency.runners.base import Runner
from tdbnas.latency.table import LatencyTable
from tdbnas.latency.units import detector_units
from tdbnas.spaces import get_reference, get_space

UNITS = detector_units(get_reference("mobiledet-edgetpu").arch, 320)


def fake_latency(text: str) -> float:
    return 0.1 + (zlib.crc32(text.encode()) % 1000) / 1000


def fake_builder(units, cache_dir):
    cache_dir.mkdir(parents=True, exist_ok=True)
    models = {}
    for unit in units:
        path = cache_dir / f"{zlib.crc32(unit.key.encode()):08x}.tflite"
        path.write_text(unit.key)
        models[unit.key] = SimpleNamespace(key=unit.key, path=path, signature=None)
    return models


def fake_measure(runner, path, protocol, signature=None):
    samples = runner.time_model(Path(path), warmup=1, runs=5, signature=signature)
    return SimpleNamespace(samples_ms=samples, value_ms=sorted(samples)[2], statistic="median", spread=0.0,
                           attempts=1, environment={"attempt": 1})


class FakeRunner(Runner):
    name = "fake"

    def __init__(self, fail_after=None, threads=1, delay=0.0):
        self.timed: list[str] = []
        self.fail_after, self.threads, self.delay = fail_after, threads, delay

    def environment(self):
        return {"runtime_version": "fake-rt 1.0", "threads": self.threads, "cpu": "test"}

    def time_model(self, model, *, warmup, runs, signature=None):
        if self.fail_after is not None and len(self.timed) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        time.sleep(self.delay)
        key = Path(model).read_text()
        self.timed.append(key)
        return [fake_latency(key)] * runs


def run_profile(table, runner, tmp_path, units=UNITS):
    return profile_units(units, table=table, profile="cpu", runner=runner, protocol=None, cache_dir=tmp_path / "mm",
                         progress=False, device="cpu", builder=fake_builder, measurer=fake_measure)


def test_profiling_commits_every_unit_with_its_samples(tmp_path):
    table = LatencyTable(tmp_path / "lut.sqlite")
    report = run_profile(table, FakeRunner(), tmp_path)
    keys = list(dict.fromkeys(u.key for u in UNITS))
    assert (report.requested, report.already, report.measured) == (len(keys), 0, len(keys))
    assert report.runtime_version == "fake-rt 1.0"
    entry = table.get("cpu", keys[0], "fake-rt 1.0")
    assert entry.value_ms == fake_latency(keys[0]) and len(entry.samples) == 5
    assert entry.environment["attempt"] == 1 and entry.environment["device"] == "cpu"
    assert table.profile("cpu").environment["threads"] == 1


def test_a_killed_run_resumes_without_re_measuring(tmp_path):
    table = LatencyTable(tmp_path / "lut.sqlite")
    with pytest.raises(KeyboardInterrupt):
        run_profile(table, FakeRunner(fail_after=7), tmp_path)
    assert table.count("cpu") == 7  # everything measured before the kill is kept
    runner = FakeRunner()
    report = run_profile(table, runner, tmp_path)
    keys = list(dict.fromkeys(u.key for u in UNITS))
    assert report.already == 7 and report.measured == len(keys) - 7
    assert len(runner.timed) == len(keys) - 7 and not set(runner.timed) & set(keys[:7])
    assert table.missing("cpu", keys) == []
    assert run_profile(table, FakeRunner(fail_after=0), tmp_path).measured == 0  # nothing left: nothing timed


def test_repeated_sigkills_lose_nothing_and_duplicate_nothing(tmp_path):
    """SIGKILL the profiler three times at random moments; the resumed run completes, every key
    is there exactly once and SQLite's integrity check passes."""
    import random
    import sqlite3

    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        import test_profiling as t
        from tdbnas.latency.table import LatencyTable
        t.run_profile(LatencyTable(Path({str(tmp_path)!r}) / "lut.sqlite"), t.FakeRunner(delay=0.02),
                      Path({str(tmp_path)!r}))
    """))
    table_path = tmp_path / "lut.sqlite"
    total = len(set(u.key for u in UNITS))
    rng = random.Random(7)
    previous = 0
    for _ in range(3):
        process = subprocess.Popen([sys.executable, str(script)])
        target = min(total - 1, previous + rng.randint(2, 6))
        deadline = time.time() + 60
        while time.time() < deadline:
            if table_path.exists() and LatencyTable(table_path).count("cpu") >= target:
                break
            time.sleep(rng.uniform(0.0, 0.03))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        done = LatencyTable(table_path).count("cpu")
        assert previous <= done < total  # nothing committed was lost; the run really was cut short
        previous = done
    table = LatencyTable(table_path)
    runner = FakeRunner()
    report = run_profile(table, runner, tmp_path)
    assert report.already == previous and len(runner.timed) == report.measured == total - previous
    assert table.missing("cpu", [u.key for u in UNITS]) == []
    table.close()
    with sqlite3.connect(table_path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = connection.execute("SELECT key, COUNT(*) FROM entries WHERE profile = 'cpu' GROUP BY key").fetchall()
    assert len(rows) == total and all(count == 1 for _, count in rows)


def test_a_profile_does_not_mix_settings(tmp_path):
    table = LatencyTable(tmp_path / "lut.sqlite")
    run_profile(table, FakeRunner(), tmp_path, UNITS[:2])
    with pytest.raises(ValueError, match="threads: profile has 1, this run 4.*another --profile name"):
        run_profile(table, FakeRunner(threads=4), tmp_path, UNITS[:3])
    check_compatible(table, "cpu", {"threads": 1, "load": 3.0})  # unrelated fields do not matter


def test_runtime_version_comes_from_the_environment():
    assert runtime_version_of({"runtime_version": "litert 1.4"}) == "litert 1.4"
    assert runtime_version_of({"runtime": "litert", "version": "1.4"}) == "litert 1.4"
    with pytest.raises(ValueError, match="does not name its runtime version"):
        runtime_version_of({"threads": 1})


def test_detectors_are_timed_once_and_kept_in_the_table(tmp_path):
    table = LatencyTable(tmp_path / "lut.sqlite")
    built = []

    def build_detector(arch, resolution, path, head, width_multiplier):
        built.append(arch)
        Path(path).write_text(arch.encode())

    archs = [get_space("tdb").sample(seed) for seed in range(3)]
    runner = FakeRunner()
    first = measure_detectors(archs, 320, table=table, profile="cpu", runner=runner, cache_dir=tmp_path / "mm",
                              progress=False, builder=build_detector, measurer=fake_measure)
    assert [m.value_ms for m in first] == [fake_latency(a.encode()) for a in archs]
    again = measure_detectors(archs, 320, table=table, profile="cpu", runner=FakeRunner(fail_after=0),
                              cache_dir=tmp_path / "mm", progress=False, builder=build_detector,
                              measurer=fake_measure)
    assert again == first and len(built) == 3
    assert first[0].key == detector_key(archs[0], 320) == f"detector@320x320:c90:m1:l2:{archs[0].encode()}"


def test_first_use_profiles_only_the_missing_units_then_predicts(tmp_path, monkeypatch):
    from tdbnas.latency import profiles, profiling

    runners = []
    monkeypatch.setattr(profiles, "make_runner", lambda kind="local", threads=1: runners.append(FakeRunner()) or
                        runners[-1])
    monkeypatch.setattr(profiling, "_default_builder", lambda: fake_builder)
    monkeypatch.setattr(profiling, "_default_measurer", lambda: fake_measure)
    monkeypatch.setattr(profiling, "_default_protocol", lambda: None)
    monkeypatch.setenv("TDBNAS_CACHE", str(tmp_path / "cache"))
    arch = get_reference("mobiledet-edgetpu").arch
    predictor = profiles.get_predictor("cpu", 320, archs=[arch], progress=False)
    assert predictor.table.path == tmp_path / "cache" / "latency.sqlite"
    keys = [u.key for u in UNITS]
    assert predictor.predict(arch, 320).raw_sum_ms == pytest.approx(sum(fake_latency(k) for k in keys))
    assert len(runners[0].timed) == len(set(keys))
    profiles.get_predictor("cpu", 320, archs=[arch], table=predictor.table, progress=False)
    assert runners[1].timed == []  # cached: the second use measures nothing


def test_modelled_profiles_are_filled_from_the_analytic_model(tmp_path):
    from tdbnas.latency import modelled, profiles

    table = LatencyTable(tmp_path / "lut.sqlite")
    arch = get_reference("mobiledet-edgetpu").arch
    predictor = profiles.get_predictor("edgetpu", 320, archs=[arch], table=table)
    prediction = predictor.predict(arch, 320)
    assert prediction.kind == "modelled"
    assert prediction.runtime_version == f"modelled-edgetpu-v{modelled.VERSION}"
    # Every entry is the analytic model's number for its unit, and the total adds the whole-model term.
    assert prediction.raw_sum_ms == pytest.approx(sum(modelled.modelled_unit_ms(u, "edgetpu") for u in UNITS))
    assert prediction.total_ms == pytest.approx(modelled.modelled_detector_ms(arch, 320, "edgetpu").total_ms, rel=1e-6)
    assert table.profile("edgetpu").kind == "modelled"
    assert profiles.fill_modelled(table, "edgetpu", UNITS) == 0  # already there


@pytest.mark.tflite
@pytest.mark.slow
def test_real_micro_models_on_this_cpu(tmp_path):
    """The real path: the micro-model builder, the local LiteRT runner and the measurement protocol."""
    pytest.importorskip("tdbnas.latency.micromodels")
    pytest.importorskip("ai_edge_litert")
    from tdbnas.latency.profiles import make_runner

    units = [u for u in UNITS if u.key.startswith(("ssd_box", "ssd_class"))][-2:]  # two tiny predictors
    table = LatencyTable(tmp_path / "lut.sqlite")
    with make_runner("local", threads=1) as runner:
        report = profile_units(units, table=table, profile="cpu", runner=runner, cache_dir=tmp_path / "mm",
                               progress=False, device="cpu")
    assert report.measured == 2
    for unit in units:
        entry = table.get("cpu", unit.key)
        assert 0 < entry.value_ms < 50 and len(entry.samples) >= 5
