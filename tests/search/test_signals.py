"""Accuracy signals (zero-shot scores, cost baselines, the factory a search builds) on a tiny
space and tiny data; successive halving; supernet path sampling (FairNAS, sandwich)."""

import math

import pytest

from tdbnas.search.halving import successive_halving
from tdbnas.search.sampling import fair_paths, paths_per_step, step_paths
from tdbnas.search.signals import SIGNALS, ZERO_SHOT, SignalFactory, fidelity_sentence, head_items
from tdbnas.spaces import SSDLiteHead, detector_cost

pytestmark = pytest.mark.torch

RESOLUTION = 64
HEAD = SSDLiteHead(num_classes=3, from_features=("C3", "C4", "C5"), extra_depths=(64, 32))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tdbnas.detection.data.synth import CLASSES, SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("signals") / "data"
    config = SynthConfig(num_train=16, num_val=4, image_size=RESOLUTION, classes=CLASSES[:HEAD.num_classes])
    return write_synthetic_dataset(root, config, progress=False)


@pytest.fixture(scope="module")
def members(tiny):
    return [tiny.sample(seed) for seed in range(4)]


def factory(signal, data, seed=0):
    return SignalFactory(signal, (RESOLUTION, RESOLUTION), head_items(HEAD), data=str(data), seed=seed)


@pytest.mark.parametrize("signal", ZERO_SHOT)
def test_each_zero_shot_score_is_finite_deterministic_and_tells_members_apart(signal, data, members):
    first, again, other_seed = factory(signal, data)(), factory(signal, data)(), factory(signal, data, seed=1)()
    scores = [first.evaluate(arch) for arch in members]
    for result in scores:
        assert result["signal"] == signal and math.isfinite(result["score"]) and result["seconds"] >= 0
    assert [again.evaluate(arch)["score"] for arch in members] == [r["score"] for r in scores]  # same seed
    assert len({round(r["score"], 9) for r in scores}) == len(members)  # not a constant
    assert other_seed.evaluate(members[0])["score"] != scores[0]["score"]  # the seed is used


def test_cost_signals_are_the_detector_costs(members, data):
    for name in ("madds", "params"):
        signal = factory(name, data)()
        for arch in members:
            expected = getattr(detector_cost(arch, RESOLUTION, HEAD.num_classes, head=HEAD).total, name)
            assert signal.evaluate(arch)["score"] == float(expected)


def test_the_factory_says_what_a_signal_needs():
    with pytest.raises(ValueError, match="unknown accuracy signal 'accuracy'"):
        SignalFactory("accuracy", (64, 64), head_items(HEAD))
    with pytest.raises(ValueError, match="needs a trained supernet"):
        SignalFactory("supernet", (64, 64), head_items(HEAD))
    for signal in ("naswot", "gradnorm"):
        with pytest.raises(ValueError, match="scores real images"):
            SignalFactory(signal, (64, 64), head_items(HEAD))
    assert set(SIGNALS) >= {"supernet", "madds", "params", *ZERO_SHOT}


def test_the_fidelity_sentence_names_the_signal():
    for signal in SIGNALS:
        assert f"`{signal}`" in fidelity_sentence(signal)


def test_the_fidelity_sentence_quotes_the_measurement_and_says_when_it_is_partial(monkeypatch):
    import tdbnas.search.signals as signals

    measured = {"row": "madds", "archs": 13, "setting": "the built-in setting", "kendall": 0.38,
                "spearman": 0.57, "noise_floor": None, "seconds": 0.0, "partial": "13 of 41 planned trainings"}
    monkeypatch.setattr(signals, "shipped_fidelity", lambda: {"signals": {"madds": measured}})
    sentence = fidelity_sentence("madds")
    assert "Kendall tau 0.38" in sentence and "13 architectures" in sentence
    assert "partial ground truth: 13 of 41" in sentence and "noise floor not yet measured" in sentence
    monkeypatch.setattr(signals, "shipped_fidelity", lambda: {"signals": {"madds": {
        **measured, "noise_floor": 0.012, "partial": None}}})
    sentence = fidelity_sentence("madds")
    assert "partial" not in sentence and "seed noise floor 0.012 mAP" in sentence


def test_a_default_that_scores_real_images_falls_back_to_the_best_data_free_one_without_data(monkeypatch):
    import tdbnas.search.signals as signals

    monkeypatch.setattr(signals, "shipped_fidelity", lambda: {"default": "naswot", "default_without_data": "zen"})
    monkeypatch.setattr(signals, "DEFAULT_SIGNAL", "naswot")
    assert signals.default_signal(has_data=True) == "naswot"
    assert signals.default_signal(has_data=False) == "zen"
    monkeypatch.setattr(signals, "DEFAULT_SIGNAL", "madds")
    assert signals.default_signal(has_data=False) == "madds"


# ---- successive halving ---------------------------------------------------------------------------
def test_successive_halving_keeps_the_better_half_and_continues_them():
    quality = {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.2, "e": 0.5}
    calls = []

    def evaluate(arch, epochs):
        calls.append((arch, epochs))
        return quality[arch] * epochs

    rungs = successive_halving(["a", "b", "c", "d", "e"], evaluate, [1.0, 2.0, 4.0])
    assert [sorted(r.scores) for r in rungs] == [["a", "b", "c", "d", "e"], ["b", "c", "e"], ["b", "e"]]
    assert rungs[-1].ranked(["a", "b", "c", "d", "e"])[0] == "e"
    assert len(calls) == 5 + 3 + 2


def test_successive_halving_breaks_ties_by_the_cheap_order_and_checks_its_inputs():
    rungs = successive_halving(["x", "y", "z"], lambda arch, epochs: 1.0, [1.0, 2.0], eta=3)
    assert list(rungs[1].scores) == ["x"]  # a tie keeps the cheap signal's favourite
    with pytest.raises(ValueError, match="increasing"):
        successive_halving(["x"], lambda arch, epochs: 0.0, [2.0, 1.0])
    with pytest.raises(ValueError, match="at least one candidate"):
        successive_halving([], lambda arch, epochs: 0.0, [1.0])
    with pytest.raises(ValueError, match="eta"):
        successive_halving(["x"], lambda arch, epochs: 0.0, [1.0], eta=1)


# ---- supernet sampling ------------------------------------------------------------------------------
def test_fair_sampling_trains_every_choice_of_every_slot_once_per_step(tiny):
    for step in range(5):
        paths = fair_paths(tiny, step, seed=3)
        assert len(paths) == paths_per_step(tiny, "fair") == max(len(slot) for slot in tiny.slots)
        genomes = [tiny.encode(path) for path in paths]
        for column, slot in enumerate(tiny.slots):
            assert set(range(len(slot))) <= {genome[column] for genome in genomes}
    assert fair_paths(tiny, 2, seed=3) == fair_paths(tiny, 2, seed=3)  # a resumed run trains the same
    assert fair_paths(tiny, 2, seed=3) != fair_paths(tiny, 3, seed=3)


def test_sandwich_sampling_leads_with_the_largest_then_the_smallest(tiny, members):
    paths = step_paths(tiny, "sandwich", 0, resolution=RESOLUTION, head=HEAD)
    assert len(paths) == paths_per_step(tiny, "sandwich")
    madds = [detector_cost(p, RESOLUTION, HEAD.num_classes, head=HEAD).total.madds for p in paths]
    everyone = [detector_cost(m, RESOLUTION, HEAD.num_classes, head=HEAD).total.madds for m in members]
    assert madds[0] == max(madds) >= max(everyone) and madds[1] == min(madds) <= min(everyone)
    assert step_paths(tiny, "sandwich", 4, resolution=RESOLUTION, head=HEAD) == \
        step_paths(tiny, "sandwich", 4, resolution=RESOLUTION, head=HEAD)
    with pytest.raises(ValueError, match="unknown supernet sampling"):
        step_paths(tiny, "greedy", 0)
