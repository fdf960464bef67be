"""`tdbnas latency fit`: a cost model from a modelled profile, from a (fake) local measured
profile, and one-line errors for bad inputs."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tdbnas.cli.main import main
from tdbnas.latency import profiles, profiling
from tdbnas.latency.cost_model import CostModel
from tdbnas.latency.runners.base import Runner
from tdbnas.latency.table import LatencyTable

SPACE = {"name": "cli-small", "blocks": [
    {"name": "stem", "layers": 1, "stride": 2, "widths": [32], "ops": ["conv_k3"]},
    {"name": "b1", "layers": 1, "stride": 1, "widths": [16, 24], "ops": ["ir_k3_e4", "er_k3_e4"]},
    {"name": "b2", "layers": 2, "stride": 2, "widths": [24, 32], "ops": ["ir_k3_e4", "er_k3_e4"], "skippable": True},
    {"name": "b3", "layers": 1, "stride": 2, "widths": [40, 64], "ops": ["ir_k3_e4", "er_k3_e4"]},
    {"name": "b4", "layers": 1, "stride": 2, "widths": [72, 96], "ops": ["ir_k3_e4", "ir_k5_e4"]},
    {"name": "b5", "layers": 1, "stride": 2, "widths": [120], "ops": ["ir_k3_e4", "er_k3_e4"]}]}
FEATURES = 11  # widths 1+1+1+1, ops 1 (b1) + 1 + 2 (b2, second layer may skip) + 1 + 1 + 1


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def test_fit_on_a_modelled_profile_writes_a_model_and_reports_held_out_error(capsys, tmp_path, space_file):
    out_path = tmp_path / "models" / "tpu.json"
    code, out, err = run(capsys, "latency", "fit", "--space", space_file, "--profile", "edgetpu", "--samples", 60,
                         "--holdout", 0.25, "--features", "onehot", "--out", out_path, "--table",
                         tmp_path / "lut.sqlite")
    assert code == 0, err
    assert "MODELLED, not measured" in out and "45 architectures fitted, 15 held out" in out
    assert f"{FEATURES} features (no cross terms)" in out and "held-out error: median |error|" in out
    model = CostModel.load(out_path)
    assert model.space == "cli-small" and len(model.layout) == FEATURES
    assert model.metadata["kind"] == "modelled" and model.metadata["profile"] == "edgetpu"
    assert model.metadata["holdout_error"]["n"] == 15 and model.metadata["holdout"] == 0.25


def test_fit_json_summary_with_cross_terms(capsys, tmp_path, space_file):
    code, out, _ = run(capsys, "latency", "fit", "--space", space_file, "--profile", "dsp", "--samples", 80,
                       "--features", "onehot", "--cross-terms", "--ridge", 0.01, "--out", tmp_path / "dsp.json",
                       "--table", tmp_path / "lut.sqlite", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["kind"] == "modelled" and summary["cross_terms"] is True
    assert summary["features"] > FEATURES and summary["holdout_error"]["n"] == 16
    assert 0 <= summary["holdout_error"]["median_ape_pct"] < 10


class FakeRunner(Runner):
    name = "local"

    def __init__(self, threads=1):
        self.threads = threads

    def environment(self):
        return {"runtime_version": "fake-rt 1.0", "threads": self.threads}

    def time_model(self, model, *, warmup, runs, signature=None):
        return [1.0 + len(Path(model).read_text()) / 100] * runs


def test_fit_on_a_local_measured_profile_times_detectors_and_keeps_them(capsys, monkeypatch, tmp_path, space_file):
    """The measured path with a stand-in for `build_detector_tflite` (being written elsewhere)."""
    monkeypatch.setenv("TDBNAS_CACHE", str(tmp_path / "cache"))
    built = []

    def build(arch, hw, path, *, head, width_multiplier):
        built.append(arch)
        Path(path).write_text(arch.encode())  # the fake latency grows with the string

    def measure(runner, path, protocol, signature=None):
        samples = runner.time_model(path, warmup=1, runs=3)
        return SimpleNamespace(samples_ms=samples, value_ms=samples[0], statistic="median", spread=0.0,
                               environment={})

    monkeypatch.setattr(profiles, "make_runner", lambda kind="local", *, threads=1, **o: FakeRunner(threads))
    monkeypatch.setattr(profiling, "_default_detector_builder", lambda: build)
    monkeypatch.setattr(profiling, "_default_measurer", lambda: measure)
    monkeypatch.setattr(profiling, "_default_protocol", lambda: None)
    table = tmp_path / "lut.sqlite"
    argv = ["latency", "fit", "--space", space_file, "--profile", "cpu", "--samples", 40, "--out",
            tmp_path / "cpu.json", "--table", table, "--no-progress"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "(measured end-to-end latencies)" in out and len(built) == 40
    assert CostModel.load(tmp_path / "cpu.json").metadata["kind"] == "measured"
    with LatencyTable(table) as lut:
        assert sum(profiling.is_detector_key(e.key) for e in lut.entries("cpu")) == 40
    code, _, _ = run(capsys, *argv)  # the timings are in the table: nothing is built again
    assert code == 0 and len(built) == 40


@pytest.mark.parametrize("argv, message", [
    (["--profile", "pixel9"], "unknown profile 'pixel9' (built-in or in"),
    (["--profile", "edgetpu", "--samples", 10], "cross-validation needs 10: need at least 12 samples"),
    (["--profile", "edgetpu", "--samples", 10, "--features", "onehot", "--ridge", 0],
     "need at least 15 samples, or a ridge penalty"),
    (["--profile", "edgetpu", "--space", "nope"], "'nope' is neither a built-in categorical space"),
    (["--profile", "edgetpu", "--space", "fbnet"], "space 'fbnet' is categorical: no profile can time its members"),
    (["--profile", "edgetpu", "--cross-terms", ""], "--cross-terms belongs to --features onehot"),
])
def test_bad_inputs_give_one_error_line(capsys, tmp_path, space_file, argv, message):
    base = {"--space": space_file, "--out": tmp_path / "m.json", "--table": tmp_path / "lut.sqlite"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    code, out, err = run(capsys, "latency", "fit", *[x for kv in base.items() for x in kv if x != ""])
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.json").exists()


def test_a_profile_measured_elsewhere_is_refused(capsys, tmp_path, space_file):
    table = tmp_path / "lut.sqlite"
    with LatencyTable(table) as lut:
        lut.ensure_profile("pixel4", kind="measured", runner="adb", environment={"device": "cpu"})
    code, _, err = run(capsys, "latency", "fit", "--space", space_file, "--profile", "pixel4", "--out",
                       tmp_path / "m.json", "--table", table)
    assert code == 2 and "is measured with the adb runner" in err
    assert len(err.strip().splitlines()) == 1


def test_holdout_must_be_a_fraction(capsys, tmp_path, space_file):
    with pytest.raises(SystemExit):
        main(["latency", "fit", "--space", str(space_file), "--profile", "edgetpu", "--holdout", "1.5",
              "--out", str(tmp_path / "m.json")])
    assert "expected a fraction between 0 and 1" in capsys.readouterr().err
