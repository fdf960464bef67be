"""`tdbnas data`, `tdbnas train`, `tdbnas eval` from the command line: outputs and clear errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tdbnas.cli.main import main
from tdbnas.detection.train import load_checkpoint

pytestmark = pytest.mark.torch



@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["data", "synth", "--out", str(root), "--train", "16", "--val", "6", "--image-size", "64",
                 "--no-progress"]) == 0
    return root


def test_data_synth_and_check(dataset, cli):
    code, out, _ = cli("data", "check", dataset, "--split", "val", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["images"] == 6 and summary["classes"] == 6 and summary["objects"] >= 6


def test_train_then_eval_write_config_weights_and_metrics(dataset, tmp_path, cli):
    out_dir = tmp_path / "run"
    code, out, err = cli("train", "--data", dataset, "--arch", "mobiledet-cpu", "--resolution", "64",
                         "--epochs", "1", "--batch-size", "8", "--workers", "0", "--out", out_dir, "--no-progress")
    assert code == 0, err
    assert "trained 2 steps" in out and "mAP_50" in out
    config = json.loads((out_dir / "config.json").read_text())
    assert config["arch"] == "mobiledet-cpu" and config["resolution"] == 64
    code, out, err = cli("eval", "--weights", out_dir / "model.pt", "--json", "--no-progress")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["images"] == 6 and set(payload["metrics"]) >= {"mAP", "mAP_50", "mAP_small"}
    assert json.loads((out_dir / "eval_val.json").read_text())["metrics"] == payload["metrics"]


def test_settings_file_and_flags_combine(dataset, tmp_path, cli):
    settings = tmp_path / "s.yaml"
    settings.write_text(f"arch: mobiledet-cpu\ndata: {dataset}\nresolution: 64\nepochs: 0.5\nbatch_size: 8\n"
                        "workers: 0\nval_split: ''\n")
    code, _, err = cli("train", "--config", settings, "--lr", "0.01", "--out", tmp_path / "r", "--no-progress")
    assert code == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["lr"] == 0.01 and config["epochs"] == 0.5


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "X"], "no dataset: pass --data"),
    (["train", "--data", "/nonexistent/d", "--out", "X"], "dataset directory /nonexistent/d does not exist"),
    (["eval", "--weights", "/nonexistent/model.pt", "--arch", "mobiledet-cpu", "--data", "D"], "does not exist"),
    (["data", "check", "/nonexistent/d"], "tdbnas data synth"),
])
def test_bad_input_is_one_clear_line(argv, message, tmp_path, cli):
    argv = [a.replace("X", str(tmp_path / "x")) for a in argv]
    code, _, err = cli(*argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_bad_settings_file_is_explained(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    code, _, err = cli("train", "--config", bad, "--out", tmp_path / "x")
    assert code == 2 and "not valid YAML/JSON" in err
    bad.write_text("epoch: 3\n")
    code, _, err = cli("train", "--config", bad, "--data", "d", "--out", tmp_path / "x")
    assert code == 2 and "unknown training settings ['epoch']" in err


@pytest.mark.slow
def test_sigkilled_training_resumes_from_its_checkpoint(dataset, tmp_path):
    """A real SIGKILL mid-run: the atomic checkpoint survives and the rerun finishes the schedule."""
    out_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tdbnas.cli", "train", "--data", str(dataset), "--arch", "mobiledet-cpu",
               "--resolution", "64", "--epochs", "40", "--batch-size", "8", "--workers", "0", "--threads", "1",
               "--val-split", "", "--out", str(out_dir), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out_dir / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (out_dir / "checkpoint.pt").exists(), process.stderr.read().decode()
    killed_at = load_checkpoint(out_dir / "checkpoint.pt")["step"]  # whole, never torn: written atomically
    assert 0 < killed_at < 80
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    events = [json.loads(line)["event"] for line in (out_dir / "history.jsonl").read_text().splitlines()]
    assert events[0] == "start" and "resume" in events
    assert "trained 80 steps" in finished.stdout
