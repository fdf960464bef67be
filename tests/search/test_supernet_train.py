"""Supernet training: the held-out search split, one sampled path per step, kill/resume equivalence."""

import json

import pytest

torch = pytest.importorskip("torch")

from tdbnas.detection.train import load_checkpoint  # noqa: E402
from tdbnas.search.splits import SearchSplit, build_search_split  # noqa: E402
from tdbnas.search.supernet import Supernet, sample_path  # noqa: E402
from tdbnas.search.supernet_train import SupernetTrainConfig, SupernetTrainer, load_space  # noqa: E402

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


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("supernet")
    write_synthetic_dataset(root / "data", SynthConfig(num_train=16, num_val=4, image_size=64, seed=3), progress=False)
    (root / "tiny.yaml").write_text(SPACE_YAML)
    return root


def _config(tiny, **changes):
    settings = dict(space=str(tiny / "tiny.yaml"), data=str(tiny / "data"), resolution=64, epochs=2, batch_size=4,
                    lr=0.05, warmup_epochs=0.5, workers=0, progress=False, log_every_steps=1, threads=1,
                    search_fraction=0.25, head={"extra_depths": [32, 16]})
    settings.update(changes)
    return SupernetTrainConfig(**settings)


def test_search_split_is_deterministic_held_out_and_restricted(tiny):
    split = SearchSplit(fraction=0.25, seed=5)
    train, search = build_search_split(tiny / "data", split, size=64)
    again_train, again_search = build_search_split(tiny / "data", split, size=64)
    assert search.image_ids == again_search.image_ids and train.image_ids == again_train.image_ids
    assert len(search) == 4 and len(train) == 12
    assert not set(train.image_ids) & set(search.image_ids)
    assert sorted(train.image_ids + search.image_ids) == sorted(train.dataset.ids)
    assert sorted(search.coco.getImgIds()) == sorted(search.image_ids)  # COCOeval sees the search images only
    assert {a["image_id"] for a in search.coco.dataset["annotations"]} <= set(search.image_ids)
    other = build_search_split(tiny / "data", SearchSplit(fraction=0.25, seed=6), size=64)[1]
    assert other.image_ids != search.image_ids


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_search_fraction_must_be_a_proper_fraction(fraction):
    with pytest.raises(ValueError, match=r"fraction of the training images in \(0, 1\)"):
        SearchSplit(fraction=fraction)


def test_training_never_sees_search_images_and_runs_the_sampled_paths(tiny, tmp_path, monkeypatch):
    trainer = SupernetTrainer(_config(tiny, epochs=1), tmp_path / "run")
    search_ids = set(trainer.search_view.image_ids)
    loaded, activated = [], []
    original_get = type(trainer.train_view.dataset).get
    original_set = Supernet.set_active

    def spy_get(dataset, index, rng=None):
        loaded.append(dataset.ids[index])
        return original_get(dataset, index, rng=rng)

    def spy_set(net, arch):
        activated.append(arch)
        return original_set(net, arch)

    monkeypatch.setattr(type(trainer.train_view.dataset), "get", spy_get)
    monkeypatch.setattr(Supernet, "set_active", spy_set)
    trainer.run()
    assert loaded and not set(loaded) & search_ids
    assert activated == [sample_path(trainer.space, step, 0) for step in range(trainer.step)]
    out = tmp_path / "run"
    config = json.loads((out / "config.json").read_text())
    assert (config["space"], config["search_fraction"], config["search_seed"]) == (str(tiny / "tiny.yaml"), 0.25, 0)
    recorded = json.loads((out / "search_split.json").read_text())
    assert recorded["search_image_ids"] == trainer.search_view.image_ids
    assert not (out / "eval_val.json").exists()


def test_killed_run_resumes_to_the_same_weights(tiny, tmp_path, monkeypatch):
    reference = SupernetTrainer(_config(tiny), tmp_path / "reference")
    reference.run()

    # 12 training images, batch 4: 3 steps per epoch, 6 in all. Kill at step 5: the epoch-end
    # checkpoint at step 3 survives, and the resumed run must train the same paths on the same data.
    killed = SupernetTrainer(_config(tiny), tmp_path / "killed")
    original = SupernetTrainer.train_step

    def dying_step(self, images, targets):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, images, targets)

    monkeypatch.setattr(SupernetTrainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"] == 3
    monkeypatch.setattr(SupernetTrainer, "train_step", original)

    resumed = SupernetTrainer(_config(tiny), tmp_path / "killed")
    resumed.run()
    assert resumed.step == reference.step == 6
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resume")
    torch.manual_seed(0)  # the runs' initial weights (seed 0)
    untouched = Supernet(load_space(str(tiny / "tiny.yaml")), num_classes=6,
                         head=reference.model.head_spec).state_dict()
    assert any(not torch.equal(a, untouched[n]) for n, a in reference.model.state_dict().items()
               if a.is_floating_point()), "training changed nothing"


@pytest.mark.parametrize("changes, message", [
    ({"val_split": "val"}, "does not evaluate on a val split"),
    ({"weight_sharing": "all"}, "weight_sharing must be one of"),
    ({"space": "no-such-space"}, "neither a registered space"),
    ({"compile": True}, "every sampled path would recompile"),
])
def test_bad_settings_are_refused(tiny, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        SupernetTrainer(_config(tiny, **changes), tmp_path / "run")


@pytest.mark.parametrize("sampling", ["fair", "sandwich"])
def test_multi_path_sampling_trains_its_paths_in_one_update(tiny, tmp_path, monkeypatch, sampling):
    from tdbnas.search.sampling import paths_per_step, step_paths

    trainer = SupernetTrainer(_config(tiny, epochs=1, sampling=sampling), tmp_path / sampling)
    activated, updates = [], []
    original_set, original_apply = Supernet.set_active, SupernetTrainer.apply_gradients
    monkeypatch.setattr(Supernet, "set_active", lambda net, arch: (activated.append(arch), original_set(net, arch))[1])
    monkeypatch.setattr(SupernetTrainer, "apply_gradients", lambda self: (updates.append(self.step),
                                                                          original_apply(self))[1])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    summary = trainer.run()
    assert len(updates) == trainer.step == 3  # one update per step, however many paths
    expected = [path for step in range(3) for path in step_paths(trainer.space, sampling, step, 0, resolution=64,
                                                                 head=trainer.model.head_spec)]
    assert activated == expected and len(expected) == 3 * paths_per_step(trainer.space, sampling)
    assert summary["steps"] == 3
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters())
