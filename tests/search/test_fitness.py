"""The supernet evaluator: recalibrate + COCO mAP on the search split, repeatable, clear errors."""

import json

import pytest

torch = pytest.importorskip("torch")

from tdbnas.search.fitness import SupernetEvaluator  # noqa: E402
from tdbnas.search.recalibration import RecalibrationSettings  # noqa: E402
from tdbnas.search.splits import SearchSplit  # noqa: E402
from tdbnas.search.supernet import sample_path  # noqa: E402
from tdbnas.search.supernet_train import SupernetTrainConfig, SupernetTrainer  # noqa: E402
from tdbnas.spaces import NotInSpaceError, get_reference  # noqa: E402

pytestmark = pytest.mark.torch

SPACE_YAML = """\
name: tiny
blocks:
  - {name: stem, layers: 1, stride: 2, widths: [8], ops: [conv_k3]}
  - {name: b1, layers: 2, stride: 2, widths: [8, 16], ops: [ir_k3_e2, er_k3_e2], skippable: true}
  - {name: b2, layers: 2, stride: 2, widths: [16, 24], ops: [ir_k3_e2, tk_k3_i0.25_o0.75], skippable: true}
  - {name: b3, layers: 1, stride: 2, widths: [16, 24], ops: [ir_k3_e2, ir_k5_e2]}
  - {name: b4, layers: 2, stride: 2, widths: [24, 32], ops: [ir_k3_e2, er_k3_e2], skippable: true}
"""
RECALIBRATION = RecalibrationSettings(images=8, batch_size=4)
TIMES = {"seconds", "eval_seconds", "recalibration_seconds"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A supernet trained for one epoch (3 sampled paths) on 12 of 16 tiny images; 4 held out."""
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("fitness")
    write_synthetic_dataset(root / "data", SynthConfig(num_train=16, num_val=4, image_size=64, seed=3), progress=False)
    (root / "tiny.yaml").write_text(SPACE_YAML)
    threads = torch.get_num_threads()
    config = SupernetTrainConfig(space=str(root / "tiny.yaml"), data=str(root / "data"), resolution=64, epochs=1,
                                 batch_size=4, lr=0.05, warmup_epochs=0.5, workers=0, progress=False, threads=1,
                                 search_fraction=0.25, head={"extra_depths": [32, 16]})
    trainer = SupernetTrainer(config, root / "run")
    trainer.run()
    torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="module")
def evaluator(run):
    return SupernetEvaluator(run / "run" / "checkpoint.pt", recalibration=RECALIBRATION)


def _scores(result):
    return {k: v for k, v in result.items() if k not in TIMES}


def test_scores_are_coco_numbers_on_the_search_split(evaluator):
    arch = sample_path(evaluator.supernet.space, 0)
    result = evaluator.evaluate(arch)
    assert result["arch"] == arch.encode()
    assert set(result) >= {"mAP", "mAP_50", "mAP_75", "mAP_small", "AR_100", "images", "detections",
                           "recalibration_images", "seconds"}
    assert result["images"] == len(evaluator.search_view) == 4
    assert result["recalibrated"] and result["recalibration_images"] == 8
    assert evaluator.settings["search_split"] == {"split": "train", "fraction": 0.25, "seed": 0, "images": 4}
    assert json.loads(json.dumps(result)) == result  # plain data, ready for a run database


def test_the_same_arch_scores_the_same_and_nothing_carries_over(evaluator):
    net = evaluator.supernet
    first, other = sample_path(net.space, 0, seed=9), sample_path(net.space, 1, seed=9)
    assert first != other
    trained = {name: b.clone() for name, b in net.named_buffers()}
    outputs = []
    hook = net.register_forward_hook(lambda module, args, out: None if module.training  # recalibration
                                     else outputs.append(out[1].clone()))
    try:
        a = evaluator.evaluate(first)
        b = evaluator.evaluate(other)
        again = evaluator.evaluate(first)
        plain = evaluator.evaluate(first, recalibrate=False)
    finally:
        hook.remove()
    assert _scores(a) == _scores(again)
    assert _scores(a) != _scores(b)
    evals = outputs  # one evaluation batch (4 search images) per call
    assert len(evals) == 4
    assert torch.equal(evals[0], evals[2]), "same arch, same recalibration: identical outputs"
    assert not torch.equal(evals[0], evals[1])
    assert not torch.equal(evals[0], evals[3]), "recalibrated statistics differ from the supernet's own"
    assert not plain["recalibrated"] and plain["recalibration_images"] == 0
    for name, buffer in net.named_buffers():
        assert torch.equal(buffer, trained[name]), f"{name} kept a candidate's statistics"


def test_a_supernet_in_memory_is_scored_without_changing_its_mode(run, evaluator):
    net = evaluator.supernet.train()
    try:
        in_memory = SupernetEvaluator(net, run / "data", resolution=64, search_split=SearchSplit(0.25, 0),
                                      recalibration=RECALIBRATION)
        arch = sample_path(net.space, 3)
        assert _scores(in_memory.evaluate(arch)) == _scores(evaluator.evaluate(arch))
        assert net.training
    finally:
        net.eval()


def test_max_eval_images_limits_the_search_images(run):
    limited = SupernetEvaluator(run / "run", recalibration=RECALIBRATION, max_eval_images=2,
                                recalibrate=False)
    assert limited.evaluate(sample_path(limited.supernet.space, 0))["images"] == 2


def test_an_arch_outside_the_space_is_one_clear_error(evaluator):
    with pytest.raises(NotInSpaceError, match="space 'tiny' has 5 blocks"):
        evaluator.evaluate(get_reference("mobiledet-edgetpu").arch)


def test_missing_foreign_and_wrong_checkpoints_are_clear_errors(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SupernetEvaluator(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="another search space than 'tdb'.*trained on space '.*tiny.yaml'"):
        SupernetEvaluator(run / "run", space="tdb")
    with pytest.raises(ValueError, match="trained without the search split"):
        SupernetEvaluator(run / "run", search_split=SearchSplit(0.5, 0))
    detector = tmp_path / "detector.pt"
    torch.save({"format": "tdbnas.checkpoint", "version": 1, "model": {}, "config": json.dumps({"arch": "x"})},
               detector)
    with pytest.raises(ValueError, match="detector checkpoint .* not a supernet checkpoint"):
        SupernetEvaluator(detector)
    evil = tmp_path / "evil.pt"
    import pickle

    evil.write_bytes(pickle.dumps({"format": "tdbnas.checkpoint", "x": object()}))
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        SupernetEvaluator(evil)


def test_a_checkpoint_of_another_space_is_refused(run, tmp_path):
    # The run's space file is edited after training: same name, different space.
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run / "run", copy)
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(SPACE_YAML.replace("ops: [ir_k3_e2, ir_k5_e2]}", "ops: [ir_k3_e2, er_k3_e2]}"))
    state = torch.load(copy / "checkpoint.pt", weights_only=True)
    config = json.loads(state["config"])
    config["space"] = str(space_file)
    state["config"] = json.dumps(config)
    torch.save(state, copy / "checkpoint.pt")
    with pytest.raises(ValueError, match="another search space than 'tiny'"):
        SupernetEvaluator(copy / "checkpoint.pt")
    # The original description, moved elsewhere and named explicitly, is accepted.
    moved = tmp_path / "moved.yaml"
    moved.write_text(SPACE_YAML)
    assert SupernetEvaluator(copy / "checkpoint.pt", space=str(moved)).supernet.space.name == "tiny"
