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
    assert (run / "report" / "report.html").read_text().count("data:image/png;base64,") == 2
    assert main(["run", "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("done before") == 8


def test_a_run_directory_refuses_other_settings(tmp_path):
    from tdbnas.pipeline import run_pipeline

    config = resolve(None, {**TINY, "out": str(tmp_path / "run")})
    run_pipeline(config, until="data", log=lambda message: None)
    other = resolve(None, {**TINY, "out": str(tmp_path / "run"), "resolution": 96})
    with pytest.raises(ValueError, match="other settings"):
        run_pipeline(other, until="data", log=lambda message: None)
