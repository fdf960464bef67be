"""`tdbnas profile | predict | latency ...`: output, resume, one-line errors (fake device, no TensorFlow)."""

import json
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from tdbnas.cli.main import main
from tdbnas.latency import profiles, profiling
from tdbnas.latency.runners.base import Runner
from tdbnas.latency.table import Entry, LatencyTable
from tdbnas.latency.units import detector_units
from tdbnas.spaces import get_reference

EDGETPU = get_reference("mobiledet-edgetpu").arch
DSP = get_reference("mobiledet-dsp").arch



class FakeRunner(Runner):
    name = "local"

    def __init__(self, threads=1):
        self.threads, self.timed = threads, 0

    def environment(self):
        return {"runtime_version": "fake-rt 1.0", "threads": self.threads}

    def time_model(self, model, *, warmup, runs, signature=None):
        self.timed += 1
        return [0.1 + (zlib.crc32(Path(model).read_bytes()) % 100) / 100] * runs


@pytest.fixture
def fake_device(monkeypatch, tmp_path):
    """`tdbnas profile` on a fake local device: a stand-in builder, runner and measurement."""
    monkeypatch.setenv("TDBNAS_CACHE", str(tmp_path / "cache"))
    runners = []

    def make_runner(kind="local", *, threads=1, **options):
        runners.append(FakeRunner(threads))
        return runners[-1]

    def builder(units, cache_dir):
        cache_dir.mkdir(parents=True, exist_ok=True)
        out = {}
        for unit in units:
            path = cache_dir / f"{zlib.crc32(unit.key.encode()):08x}.tflite"
            path.write_text(unit.key)
            out[unit.key] = SimpleNamespace(key=unit.key, path=path, signature=None)
        return out

    def measure(runner, path, protocol, signature=None):
        samples = runner.time_model(path, warmup=1, runs=3, signature=signature)
        return SimpleNamespace(samples_ms=samples, value_ms=samples[0], statistic="median", spread=0.0, attempts=1,
                               environment={})

    monkeypatch.setattr(profiles, "make_runner", make_runner)
    monkeypatch.setattr(profiling, "_default_builder", lambda: builder)
    monkeypatch.setattr(profiling, "_default_measurer", lambda: measure)
    monkeypatch.setattr(profiling, "_default_protocol", lambda: None)
    return runners


def value(key):
    return 0.1 + zlib.crc32(key.encode()) % 100 / 100


def raw_sum(arch):
    return sum(value(u.key) for u in detector_units(arch, 320))


@pytest.fixture
def filled(tmp_path):
    path = tmp_path / "lut.sqlite"
    table = LatencyTable(path)
    table.ensure_profile("cpu", kind="measured", runner="local", environment={"device": "cpu"})
    units = {u.key for arch in (EDGETPU, DSP) for u in detector_units(arch, 320)}
    table.put_many(Entry("cpu", "fake-rt 1.0", key, value(key), "median", 0.01, (0.5, 0.5), {}, "t") for key in units)
    table.close()
    return path


def test_profile_measures_once_then_resumes_with_nothing_to_do(fake_device, tmp_path, cli):
    table = tmp_path / "lut.sqlite"
    code, out, _ = cli("profile", "--arch", "mobiledet-edgetpu", "--device", "cpu", "--table", table,
                       "--no-progress")
    units = len({u.key for u in detector_units(EDGETPU, 320)})
    assert code == 0 and f"{units} to measure" in out and f"{units} measured" in out
    code, out, _ = cli("profile", "--arch", "mobiledet-edgetpu", "--table", table, "--no-progress")
    assert code == 0 and f"{units} already in profile 'cpu'" in out and "0 to measure" in out
    assert fake_device[-1].timed == 0
    code, out, _ = cli("profile", "--arch", "mobiledet-edgetpu", "--threads", "2", "--table", table,
                       "--dry-run")
    assert code == 0 and "profile 'cpu-t2'" in out and f"; {units} to measure" in out


def test_predict_prints_the_breakdown_and_total(filled, cli):
    code, out, _ = cli("predict", "--arch", "mobiledet-edgetpu", "--profile", "cpu", "--table", filled,
                       "--no-profile")
    units = detector_units(EDGETPU, 320)
    assert code == 0
    assert units[0].key in out and units[-1].key in out
    assert f"sum of {len(units)} units: {raw_sum(EDGETPU):.3f} ms" in out and "uncalibrated" in out
    assert "(measured; runtime fake-rt 1.0)" in out


def test_predict_json_and_several_archs(filled, cli):
    code, out, _ = cli("predict", "--arch", "mobiledet-edgetpu", "--arch", DSP.encode(), "--table", filled,
                       "--no-profile", "--json")
    records = json.loads(out)
    assert code == 0 and [r["name"] for r in records] == ["mobiledet-edgetpu", None]
    assert records[1]["arch"] == DSP.encode() and records[1]["kind"] == "measured"
    assert len(records[0]["per_unit"]) == len(detector_units(EDGETPU, 320))
    code, out, _ = cli("predict", "--arch", "mobiledet-edgetpu", "--arch", "mobiledet-dsp", "--table", filled,
                       "--no-profile")
    assert code == 0 and "predicted(ms)" in out and "mobiledet-dsp" in out


def test_predict_with_missing_units_names_them_and_the_command(filled, cli):
    code, _, err = cli("predict", "--arch", "mobiledet-cpu", "--table", filled, "--no-profile")
    first = detector_units(get_reference("mobiledet-cpu").arch, 320)[0].key
    assert code == 2 and "Traceback" not in err
    assert first in err and "tdbnas profile --arch" in err and f"--table {filled}" in err


def test_latency_show_export_import(filled, tmp_path, cli):
    code, out, _ = cli("latency", "show", "--table", filled)
    units = len({u.key for arch in (EDGETPU, DSP) for u in detector_units(arch, 320)})
    assert code == 0 and "cpu" in out and f"  {units}" in out
    code, out, _ = cli("latency", "show", "--table", filled, "--profile", "cpu", "--json")
    assert code == 0 and len(json.loads(out)["entries"]) == units
    for suffix in ("json", "csv"):
        exported = tmp_path / f"lut.{suffix}"
        code, out, _ = cli("latency", "export", exported, "--table", filled)
        assert code == 0 and f"wrote {units} entries" in out
        code, out, _ = cli("latency", "import", exported, "--table", tmp_path / f"copy-{suffix}.sqlite")
        assert code == 0 and f"imported {units} entries" in out
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "tdbnas.latency-table", "version": 1, "profiles": [], "entries": [{"key": 3}]}')
    code, _, err = cli("latency", "import", bad, "--table", filled)
    assert code == 2 and "entry 1: profile must be a non-empty string" in err and "Traceback" not in err


def test_latency_calibrate_with_latencies_measured_elsewhere(filled, cli):
    raw_edgetpu, raw_dsp = raw_sum(EDGETPU), raw_sum(DSP)
    code, out, _ = cli("latency", "calibrate", "--profile", "cpu", "--table", filled,
                       "--measured", f"mobiledet-edgetpu={2 * raw_edgetpu}",
                       "--measured", f"{DSP.encode()}={2 * raw_dsp}")
    # Two detectors of similar size: a scale is fitted, not an intercept (fit_calibration).
    assert code == 0 and "2.0000 * sum + 0.000 ms" in out
    code, out, _ = cli("predict", "--arch", "mobiledet-edgetpu", "--table", filled, "--no-profile")
    assert f"total:             {2 * raw_edgetpu:.3f} ms" in out
    code, _, err = cli("latency", "calibrate", "--table", filled, "--measured", "mobiledet-edgetpu=fast")
    assert code == 2 and "ARCH=MS" in err


def test_latency_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["latency", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("show", "export", "import", "calibrate"))


@pytest.mark.parametrize("argv, message", [
    (["--runner", "ssh"], "--runner ssh needs --host user@host"),
    (["--serial", "R58M"], "--serial, --android-delegate and --benchmark-binary are for --runner adb"),
    (["--runner", "adb", "--port", "22"], "--host and --port are for --runner ssh"),
    (["--delegate", "libx.so", "--delegate-option", "novalue"], "--delegate-option takes KEY=VALUE"),
])
def test_device_flags_are_checked_before_anything_runs(argv, message, tmp_path, cli):
    code, _, err = cli("profile", "--arch", "mobiledet-edgetpu", "--table", tmp_path / "t.sqlite", *argv)
    assert code == 2 and message in err


def test_a_real_edge_tpu_needs_the_compiler_and_says_so(tmp_path, monkeypatch, cli):
    monkeypatch.setattr(profiles, "make_runner", lambda kind, threads=1, **options: FakeRunner(threads))
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = cli("profile", "--arch", "mobiledet-edgetpu", "--device", "edgetpu", "--delegate",
                       "libedgetpu.so.1", "--table", tmp_path / "t.sqlite")
    assert code == 2 and "edgetpu_compiler is not on PATH" in err


def test_a_measured_accelerator_profile_replaces_the_modelled_one(tmp_path):
    table = LatencyTable(tmp_path / "t.sqlite")
    units = detector_units(EDGETPU, 320)
    table.ensure_profile(profiles.measured_name("edgetpu"), kind="measured", runner="local",
                         environment={"runtime_version": "rt"})
    table.put_many(Entry(profiles.measured_name("edgetpu"), "rt", u.key, 0.05, "min", None, (), {}, "now")
                   for u in units)
    predictor = profiles.get_predictor("edgetpu", 320, archs=[EDGETPU], table=table)
    prediction = predictor.predict(EDGETPU, 320)
    assert prediction.kind == "measured" and prediction.raw_sum_ms == pytest.approx(0.05 * len(units))


def test_validate_compares_predictions_with_end_to_end_timings(fake_device, tmp_path, monkeypatch, cli):
    def detector_builder(arch, hw, path, *, head, width_multiplier=1.0):
        Path(path).write_text(arch.encode())  # the fake runner's timing depends on the file's bytes

    monkeypatch.setattr(profiling, "_default_detector_builder", lambda: detector_builder)
    table, plot, points = tmp_path / "lut.sqlite", tmp_path / "v.png", tmp_path / "v.json"
    code, out, err = cli("latency", "validate", "--count", "3", "--arch", "mobiledet-edgetpu", "--table",
                         table, "--plot", plot, "--json-out", points, "--no-progress")
    assert code == 0, err
    assert "4 detectors" in out and "within +-10%" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    payload = json.loads(points.read_text())
    assert len(payload["points"]) == 4 and payload["summary"]["n"] == 4
    for point in payload["points"]:  # measured = the fake runner's timing of the detector file
        assert point["measured_ms"] == pytest.approx(0.1 + zlib.crc32(point["arch"].encode()) % 100 / 100)


def test_validate_refuses_a_modelled_profile(tmp_path, cli):
    code, _, err = cli("latency", "validate", "--profile", "edgetpu", "--table", tmp_path / "t.sqlite")
    assert code == 2 and "modelled profile" in err
