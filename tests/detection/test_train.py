"""The training loop: schedule, checkpoints, kill/resume equivalence, bad checkpoints, CLI."""

import json

import pytest
import torch

from tdbnas.detection.train import TrainConfig, Trainer, learning_rate, load_checkpoint, load_weights

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, SynthConfig(num_train=12, num_val=6, image_size=64, seed=3), progress=False)
    return root


def _config(data, **changes):
    settings = dict(arch="mobiledet-cpu", data=str(data), resolution=64, epochs=2, batch_size=4, lr=0.05,
                    warmup_epochs=0.5, workers=0, progress=False, log_every_steps=1, threads=2)
    settings.update(changes)
    return TrainConfig(**settings)


def test_warmup_then_cosine():
    config = TrainConfig(lr=1.0, epochs=10, warmup_epochs=1, warmup_start_factor=0.1)
    assert learning_rate(config, 0, 10) == pytest.approx(0.1)
    assert learning_rate(config, 5, 10) == pytest.approx(0.55)
    assert learning_rate(config, 10, 10) == pytest.approx(1.0)
    assert learning_rate(config, 55, 10) == pytest.approx(0.5)   # half-way through the cosine
    assert learning_rate(config, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="unknown training settings.*'lr_max'"):
        TrainConfig.from_dict({"lr_max": 1})


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tiny_data, tmp_path, monkeypatch):
    reference = Trainer(_config(tiny_data, val_split=""), tmp_path / "reference")
    reference.run()

    # Kill a second run at step 5 of 6 (3 steps per epoch): the epoch-end checkpoint at step 3 survives.
    killed = Trainer(_config(tiny_data, val_split=""), tmp_path / "killed")
    original = Trainer.train_step

    def dying_step(self, images, targets):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, images, targets)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", original)

    resumed = Trainer(_config(tiny_data, val_split=""), tmp_path / "killed")
    resumed.run()
    assert resumed.step == reference.step == 6
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resume")
    events = [json.loads(line)["event"] for line in (tmp_path / "killed" / "history.jsonl").read_text().splitlines()]
    assert "resume" in events


@pytest.mark.slow
def test_run_writes_config_weights_and_coco_metrics(tiny_data, tmp_path):
    summary = Trainer(_config(tiny_data, epochs=1), tmp_path / "run").run()
    out = tmp_path / "run"
    assert json.loads((out / "config.json").read_text())["arch"] == "mobiledet-cpu"
    assert set(load_weights(out / "model.pt")) == set(load_weights(out / "checkpoint.pt"))
    metrics = json.loads((out / "eval_val.json").read_text())["metrics"]
    assert set(metrics) >= {"mAP", "mAP_50", "mAP_small", "mAP_medium", "mAP_large"}
    assert summary["eval"]["images"] == 6


def test_resuming_with_different_settings_is_refused(tiny_data, tmp_path):
    trainer = Trainer(_config(tiny_data, epochs=0.5, val_split=""), tmp_path / "run")
    trainer.run()
    with pytest.raises(ValueError, match="different settings.*lr"):
        Trainer(_config(tiny_data, epochs=0.5, val_split="", lr=0.5), tmp_path / "run").run()


def test_a_pickle_is_not_a_checkpoint(tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "tdbnas.checkpoint", "x": object()}))
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "missing.pt")


_TWO_RANK_SCRIPT = """
import json, os, sys, time
from tdbnas.detection.train import TrainConfig, Trainer

rank = int(os.environ["RANK"])
config = TrainConfig(**json.loads(sys.argv[1]))
trainer = Trainer(config, sys.argv[2] if rank == 0 else sys.argv[2] + "_rank1")
if rank == 1:  # a slower rank: its own clock alone would stop it steps before rank 0
    step = trainer.train_step
    trainer.train_step = lambda images, targets: (time.sleep(0.3), step(images, targets))[1]
summary = trainer.run()
with open(sys.argv[2] + f"_steps{rank}.json", "w") as handle:
    json.dump(summary["steps"], handle)
"""


@pytest.mark.slow
def test_time_budgeted_ranks_stop_at_the_same_step(tiny_data, tmp_path):
    """Under torchrun, every rank must follow one training clock: with per-rank clocks a
    slower rank stops first and the other waits forever in the next gradient all-reduce."""
    import subprocess
    import sys
    from dataclasses import asdict

    script = tmp_path / "two_ranks.py"
    script.write_text(_TWO_RANK_SCRIPT)
    config = _config(tiny_data, epochs=100, val_split="", max_minutes=0.05, schedule_minutes=0.05, threads=1)
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), json.dumps(asdict(config)), str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads((tmp_path / f"run_steps{rank}.json").read_text()) for rank in (0, 1)]
    assert steps[0] == steps[1] > 1
