"""`tdbnas run` end to end at tiny settings, stage skipping on rerun, and its settings."""

import json

import pytest
import yaml

from tdbnas.cli.main import main
from tdbnas.pipeline.config import DEFAULTS, resolve

pytestmark = [pytest.mark.torch, pytest.mark.tflite]

TINY = {
    "resolution": 64,
    "device": {"name": "edgetpu"},  # modelled: no micro-model builds, so the test stays in minutes
    "data": {"synth": {"num_train": 32, "num_val": 8, "image_size": 64}},
    "supernet": {"epochs": 1, "max_minutes": None, "schedule_minutes": None, "batch_size": 8, "workers": 0,
                 "progress": False, "search_fraction": 0.25},
    "search": {"population": 3, "parents": 1, "mutations": 1, "crossovers": 1, "generations": 2,
               "recalibration_images": 8, "eval_images": 8},
    "retrain": {"epochs": 1, "max_minutes": None, "schedule_minutes": None, "batch_size": 8, "workers": 0,
                "progress": False},
    "export": {"calibration_images": 4, "verify_images": 4},
    "references": ["mobiledet-edgetpu"],
}


def test_defaults_files_and_flags_resolve_in_order(tmp_path):
    assert resolve()["space"] == DEFAULTS["space"] == "tdb-lite"
    assert resolve("full")["space"] == "tdb"
    settings = tmp_path / "s.yaml"
    settings.write_text("resolution: 96\nsearch: {generations: 3}\n")
    config = resolve(str(settings), {"search": {"population": 7}})
    assert config["resolution"] == 96 and config["search"]["generations"] == 3 and config["search"]["population"] == 7
    with pytest.raises(ValueError, match="unknown setting 'latency.budget'"):
        resolve(None, {"latency": {"budget": 3}})
    with pytest.raises(ValueError, match="budget_ms must be a positive number"):
        resolve(None, {"latency": {"budget_ms": -1}})


@pytest.mark.slow
def test_tiny_run_end_to_end_then_rerun_skips_everything(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TDBNAS_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "out": str(tmp_path / "run")}))
    assert main(["run", "--config", str(config), "--until", "search"]) == 0  # a run cut short ...
    assert not (tmp_path / "run" / "retrain" / "stage.json").exists()
    assert main(["run", "--config", str(config)]) == 0  # ... resumes where it stopped
    out = capsys.readouterr().out
    assert "[search] done before" in out and "[report] finished" in out
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["resolution"] == 64 and saved["device"]["name"] == "edgetpu"
    results = json.loads((run / "report" / "results.json").read_text())
    assert results["latency"]["kind"] == "modelled"
    assert results["search"]["predicted_ms"]["edgetpu"] <= results["latency"]["budget_ms"]
    assert "skipped" in results["measure"]["latency"]  # a modelled device cannot be timed here
    plain = results["measure"]["plain_interpreter"]
    assert plain["images"] == 8 and plain["modules"] == []  # ran without tdbnas, torch or TensorFlow
    assert results["export"]["non_int8_outside_postprocess"] == []
    report = (run / "report" / "report.md").read_text()
    assert results["search"]["best_arch"] in report and "## Accuracy" in report
    page = (run / "report" / "report.html").read_text()
    # diagram, candidates, int8 detections on val images, minutes per stage; none skipped
    assert page.count("data:image/png;base64,") == 4 and "## Notes" not in report
    signal = DEFAULTS["search"]["signal"]
    assert results["search"]["signal"] == signal and f"ranked by `{signal}`" in report  # the report names it
    assert results["supernet"]["skipped"] and not (run / "supernet" / "model.pt").exists()
    assert main(["run", "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("done before") == 8


def test_a_run_directory_refuses_other_settings(tmp_path):
    from tdbnas.pipeline import run_pipeline

    config = resolve(None, {**TINY, "out": str(tmp_path / "run")})
    run_pipeline(config, until="data", log=lambda message: None)
    other = resolve(None, {**TINY, "out": str(tmp_path / "run"), "resolution": 96})
    with pytest.raises(ValueError, match="other settings"):
        run_pipeline(other, until="data", log=lambda message: None)


@pytest.mark.slow
def test_a_crashed_run_continues_at_the_failed_stage(tmp_path, capsys, monkeypatch):
    """A stage that dies (here: a package missing at import, as matplotlib once was) leaves
    every finished stage in place; after the fix the same command continues at that stage."""
    from tdbnas.pipeline import stages

    monkeypatch.setenv("TDBNAS_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "out": str(tmp_path / "run")}))
    real_search = stages.STAGE_FUNCTIONS["search"]

    def missing_package(run):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "search", missing_package)
    assert main(["run", "--config", str(config), "--until", "search"]) == 2
    error = capsys.readouterr().err
    assert "stage search failed" in error and "install matplotlib" in error and "rerun the same command" in error
    assert "Traceback" not in error
    finished = {p.parent.name for p in (tmp_path / "run").glob("*/stage.json")}
    assert finished == {"data", "latency", "supernet"}
    stamps = {stage: (tmp_path / "run" / stage / "stage.json").stat().st_mtime_ns for stage in finished}

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "search", real_search)  # the fix
    assert main(["run", "--config", str(config), "--until", "search"]) == 0
    out = capsys.readouterr().out
    assert all(f"[{stage}] done before" in out for stage in finished) and "[search] finished" in out
    assert {stage: (tmp_path / "run" / stage / "stage.json").stat().st_mtime_ns for stage in finished} == stamps
    assert (tmp_path / "run" / "search" / "stage.json").is_file()
