"""`tdbnas latency fit`: a cost model from a modelled profile, from a (fake) local measured
profile, from measured (architecture or genome, ms) files (CSV and JSON, k-fold report against
the baselines, a base model as offset, warnings for few samples), and one-line errors for bad
inputs and malformed files."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tdbnas.cli.main import main
from tdbnas.latency import cost_model as cm
from tdbnas.latency import modelled, profiles, profiling
from tdbnas.latency.cost_model import CostModel
from tdbnas.latency.fit_data import read_latencies, write_latencies
from tdbnas.latency.runners.base import Runner
from tdbnas.latency.table import LatencyTable
from tdbnas.spaces import CATEGORICAL_SPACES, CategoricalSpace, resolve_genome_space

SPACE = {"name": "cli-small", "blocks": [
    {"name": "stem", "layers": 1, "stride": 2, "widths": [32], "ops": ["conv_k3"]},
    {"name": "b1", "layers": 1, "stride": 1, "widths": [16, 24], "ops": ["ir_k3_e4", "er_k3_e4"]},
    {"name": "b2", "layers": 2, "stride": 2, "widths": [24, 32], "ops": ["ir_k3_e4", "er_k3_e4"], "skippable": True},
    {"name": "b3", "layers": 1, "stride": 2, "widths": [40, 64], "ops": ["ir_k3_e4", "er_k3_e4"]},
    {"name": "b4", "layers": 1, "stride": 2, "widths": [72, 96], "ops": ["ir_k3_e4", "ir_k5_e4"]},
    {"name": "b5", "layers": 1, "stride": 2, "widths": [120], "ops": ["ir_k3_e4", "er_k3_e4"]}]}
FEATURES = 11  # widths 1+1+1+1, ops 1 (b1) + 1 + 2 (b2, second layer may skip) + 1 + 1 + 1
FBNET = CATEGORICAL_SPACES.get("fbnet")



@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def test_fit_on_a_modelled_profile_writes_a_model_and_reports_held_out_error(tmp_path, space_file, cli):
    out_path = tmp_path / "models" / "tpu.json"
    code, out, err = cli("latency", "fit", "--space", space_file, "--profile", "edgetpu", "--samples", 60,
                         "--holdout", 0.25, "--features", "onehot", "--out", out_path, "--table",
                         tmp_path / "lut.sqlite")
    assert code == 0, err
    assert "MODELLED, not measured" in out and "45 architectures fitted, 15 held out" in out
    assert f"{FEATURES} features (no cross terms)" in out and "held-out error: median |error|" in out
    model = CostModel.load(out_path)
    assert model.space == "cli-small" and len(model.layout) == FEATURES
    assert model.metadata["kind"] == "modelled" and model.metadata["profile"] == "edgetpu"
    assert model.metadata["holdout_error"]["n"] == 15 and model.metadata["holdout"] == 0.25


def test_fit_json_summary_with_cross_terms(tmp_path, space_file, cli):
    code, out, _ = cli("latency", "fit", "--space", space_file, "--profile", "dsp", "--samples", 80,
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


def test_fit_on_a_local_measured_profile_times_detectors_and_keeps_them(monkeypatch, tmp_path, space_file, cli):
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
    code, out, err = cli(*argv)
    assert code == 0, err
    assert "(measured end-to-end latencies)" in out and len(built) == 40
    assert CostModel.load(tmp_path / "cpu.json").metadata["kind"] == "measured"
    with LatencyTable(table) as lut:
        assert sum(profiling.is_detector_key(e.key) for e in lut.entries("cpu")) == 40
    code, _, _ = cli(*argv)  # the timings are in the table: nothing is built again
    assert code == 0 and len(built) == 40


@pytest.mark.parametrize("argv, message", [
    (["--profile", "pixel9"], "unknown profile 'pixel9' (built-in or in"),
    (["--profile", "edgetpu", "--samples", 10], "cross-validation needs 10: need at least 12 samples"),
    (["--profile", "edgetpu", "--samples", 10, "--features", "onehot", "--ridge", 0],
     "need at least 15 samples, or a ridge penalty"),
    (["--profile", "edgetpu", "--space", "nope"], "'nope' is neither a registered space"),
    (["--profile", "edgetpu", "--space", "fbnet"], "space 'fbnet' is categorical: no profile can time its members"),
    (["--profile", "edgetpu", "--cross-terms", ""], "--cross-terms belongs to --features onehot"),
])
def test_bad_inputs_give_one_error_line(tmp_path, space_file, argv, message, cli):
    base = {"--space": space_file, "--out": tmp_path / "m.json", "--table": tmp_path / "lut.sqlite"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    code, out, err = cli("latency", "fit", *[x for kv in base.items() for x in kv if x != ""])
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.json").exists()


def test_a_profile_measured_elsewhere_is_refused(tmp_path, space_file, cli):
    table = tmp_path / "lut.sqlite"
    with LatencyTable(table) as lut:
        lut.ensure_profile("pixel4", kind="measured", runner="adb", environment={"device": "cpu"})
    code, _, err = cli("latency", "fit", "--space", space_file, "--profile", "pixel4", "--out",
                       tmp_path / "m.json", "--table", table)
    assert code == 2 and "is measured with the adb runner" in err
    assert len(err.strip().splitlines()) == 1


def test_holdout_must_be_a_fraction(capsys, tmp_path, space_file):
    with pytest.raises(SystemExit):
        main(["latency", "fit", "--space", str(space_file), "--profile", "edgetpu", "--holdout", "1.5",
              "--out", str(tmp_path / "m.json")])
    assert "expected a fraction between 0 and 1" in capsys.readouterr().err


# ---- --data: measured files ------------------------------------------------------------------
def fbnet_ms(genomes, scale=1.0):
    """A device whose ops cost per MAdd by kind, plus a fixed cost per op."""
    from tdbnas.latency.features import SharedFeatures

    shared = SharedFeatures(FBNET)
    x = dict(zip(shared.physics, shared.physics_matrix(genomes).T))
    ops = sum(v for k, v in x.items() if k.endswith(".count"))
    return scale * (1e-6 * (x["conv1x1.madds"] + 4 * x["dwconv3x3.madds"] + 3 * x["dwconv5x5.madds"]
                            + 2 * x["gconv1x1.madds"]) + 0.04 * ops + 3.0)


@pytest.fixture(scope="module")
def fbnet_data():
    genomes = cm.sample_genomes(FBNET, 120, seed=3)
    return genomes, fbnet_ms(genomes) * (1 + np.random.default_rng(0).normal(0, 0.01, len(genomes)))


def test_fit_from_a_genome_csv_reports_held_out_error_against_both_baselines(tmp_path, fbnet_data, cli):
    genomes, ms = fbnet_data
    data = write_latencies(tmp_path / "phone.csv", FBNET, genomes, ms)
    code, out, err = cli("latency", "fit", "--space", "fbnet", "--data", data, "--out", tmp_path / "m.json")
    assert code == 0, err
    assert "120 networks" in out and "5-fold held-out error" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["model"], ["madds"],
                                                                                              ["op-count"])}
    assert set(rows) == {"model", "madds", "op-count"}
    assert float(rows["model"][1]) > float(rows["op-count"][1]) and float(rows["model"][1]) > 0.95
    model = cm.CostModel.load(tmp_path / "m.json", FBNET)
    assert model.features == "shared" and model.metadata["cv_error"]["model"]["n"] == 120
    assert model.metadata["ridge_selection"] == "cv" and model.metadata["data"] == str(data)
    np.testing.assert_allclose(model.predict_genomes(genomes[:5]), ms[:5], rtol=0.05)


def test_fit_from_choice_names_in_json_with_a_json_summary(tmp_path, fbnet_data, cli):
    genomes, ms = fbnet_data
    rows = [{"choices": " ".join(FBNET.names_of(tuple(map(int, g)))), "latency": float(v)} for g, v in
            zip(genomes[:60], ms[:60])]
    rows.append(dict(rows[0], latency=float(ms[0]) * 1.02))  # a repeated network: merged into its median
    path = tmp_path / "phone.json"
    path.write_text(json.dumps({"samples": rows}))
    code, out, _ = cli("latency", "fit", "--space", "fbnet", "--data", path, "--target", "latency",
                       "--folds", 3, "--features", "onehot", "--out", tmp_path / "m.json", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["samples"] == 60 and summary["repeats_merged"] == 1 and summary["folds"] == 3
    assert set(summary["cv_error"]) == {"model", "madds", "op-count"} and summary["feature_set"] == "onehot"
    assert any("60 samples for 176 one-hot features" in w for w in summary["warnings"])


def test_architecture_strings_of_a_block_space_and_a_base_model_as_offset(tmp_path, space_file, cli):
    space = resolve_genome_space(str(space_file))
    genomes = cm.sample_genomes(space, 90, seed=1)
    archs = [space.decode(tuple(map(int, g))) for g in genomes]
    tpu = np.array([modelled.modelled_detector_ms(a, 320, "edgetpu").total_ms for a in archs])
    base_file = tmp_path / "tpu.csv"
    base_file.write_text("arch,ms\n" + "".join(f'"{a.encode()}",{v}\n' for a, v in zip(archs[:60], tpu[:60])))
    code, _, err = cli("latency", "fit", "--space", space_file, "--data", base_file, "--out",
                       tmp_path / "tpu.json")
    assert code == 0, err
    npu = 1.5 * tpu + 0.2  # another device, mostly a scaled Edge TPU
    npu_file = tmp_path / "npu.json"
    npu_file.write_text(json.dumps([{"arch": a.encode(), "ms": v} for a, v in zip(archs[60:], npu[60:])]))
    code, out, err = cli("latency", "fit", "--space", space_file, "--data", npu_file, "--base",
                         tmp_path / "tpu.json", "--out", tmp_path / "npu-model.json")
    assert code == 0, err
    model = cm.CostModel.load(tmp_path / "npu-model.json", space)
    assert model.base is not None and model.base_mode == "offset"
    assert float(np.median(np.abs(model.predict_genomes(genomes[:60]) / npu[:60] - 1))) < 0.02  # not fitted on


@pytest.mark.parametrize("name, text, message", [
    ("a.csv", "genome,ms\n1 2 3,4.0\n", "a.csv row 1: genome has 3 genes, space 'fbnet' has 22 slots"),
    ("b.csv", "genome,time\n" + " ".join(["0"] * 22) + ",4.0\n", "has no 'ms' column (columns: genome, time)"),
    ("c.csv", "genome,ms\n" + " ".join(["0"] * 22) + ",-1\n", "c.csv row 1: ms must be a positive number"),
    ("d.csv", "genome,ms\n" + " ".join(["0"] * 21) + " x,2\n", "is not a list of integers"),
    ("e.csv", "arch,genome,ms\nx,0,1\n", "give exactly one of the columns 'arch', 'genome', 'choices'"),
    ("f.csv", "arch,ms\nconv_k3_s2_c32,1\n", "space 'fbnet' is categorical: give genomes or choice names"),
    ("g.json", "{not json", "g.json is not JSON"),
    ("h.json", '{"rows": 3}', "expected a list of objects"),
    ("i.txt", "genome,ms\n", "must be a .csv or .json file"),
    ("j.csv", "genome,ms\n", "holds no samples"),
    ("k.json", '[{"choices": "k3_e1", "ms": 1}]', "1 choice names for the 22 slots"),
])
def test_malformed_files_give_one_error_line_and_write_nothing(tmp_path, name, text, message, cli):
    path = tmp_path / name
    path.write_text(text)
    code, _, err = cli("latency", "fit", "--space", "fbnet", "--data", path, "--out", tmp_path / "m.json")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.json").exists()


def test_missing_file_and_too_few_samples(tmp_path, fbnet_data, cli):
    code, _, err = cli("latency", "fit", "--space", "fbnet", "--data", tmp_path / "none.csv", "--out",
                       tmp_path / "m.json")
    assert code == 2 and "cannot read latency data" in err
    genomes, ms = fbnet_data
    data = write_latencies(tmp_path / "few.csv", FBNET, genomes[:9], ms[:9])
    code, _, err = cli("latency", "fit", "--space", "fbnet", "--data", data, "--folds", 2, "--out",
                       tmp_path / "m.json")
    assert code == 2 and "needs at least 10" in err and not (tmp_path / "m.json").exists()


def test_reading_round_trips_and_accepts_json_lists(tmp_path, fbnet_data):
    genomes, ms = fbnet_data
    path = write_latencies(tmp_path / "x.csv", FBNET, genomes[:7], ms[:7], target="gold")
    data, repeats = read_latencies(path, FBNET, target="gold")
    np.testing.assert_array_equal(data.genomes, genomes[:7])
    np.testing.assert_allclose(data.latency_ms, ms[:7]) and repeats == 0
    (tmp_path / "y.json").write_text(json.dumps([{"genome": [int(g) for g in genomes[0]], "ms": 2.5}]))
    assert read_latencies(tmp_path / "y.json", FBNET)[0].genomes.tolist() == [genomes[0].tolist()]
    toy = CategoricalSpace("toy", [("a", ["x", "y"])])
    (tmp_path / "z.csv").write_text("choices,ms\ny,1.5\n")
    assert read_latencies(tmp_path / "z.csv", toy)[0].genomes.tolist() == [[1]]


def test_a_profiles_op_table_as_the_base(monkeypatch, tmp_path, space_file, cli):
    """A device that runs 1.3x the modelled Edge TPU: 25 samples on top of `profile:edgetpu`."""
    from tdbnas.cli import latency as latency_cli

    monkeypatch.setattr(latency_cli, "BASE_SAMPLES", 150)  # the stand-in for the op table: fewer samples, faster
    space = resolve_genome_space(str(space_file))
    genomes = cm.sample_genomes(space, 25, seed=4)
    archs = [space.decode(tuple(map(int, g))) for g in genomes]
    ms = [1.3 * modelled.modelled_detector_ms(a, 320, "edgetpu").total_ms for a in archs]
    data = write_latencies(tmp_path / "tpu-board.csv", space, genomes, ms)
    code, _, err = cli("latency", "fit", "--space", space_file, "--data", data, "--base", "profile:edgetpu",
                       "--base-mode", "feature", "--table", tmp_path / "lut.sqlite", "--out", tmp_path / "m.json")
    assert code == 0, err
    model = CostModel.load(tmp_path / "m.json", space)
    assert model.base.metadata["profile"] == "edgetpu" and model.base.metadata["kind"] == "modelled"
    others = cm.sample_genomes(space, 60, seed=5)
    truth = np.array([1.3 * modelled.modelled_detector_ms(space.decode(tuple(map(int, g))), 320, "edgetpu").total_ms
                      for g in others])
    assert float(np.median(np.abs(model.predict_genomes(others) / truth - 1))) < 0.03
