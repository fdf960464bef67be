"""Cost models with shared physics features: they learn an op's cost once for all slots, pick up
slot-specific costs as deviations, choose their penalty by cross-validation (the old unpenalised
default overfits), refuse or warn when samples are too few, fit residuals on a base model, and
report held-out error against the MAdds-only and op-count baselines."""

import json
import warnings

import numpy as np
import pytest

from tdbnas.latency import cost_model as cm
from tdbnas.latency import modelled
from tdbnas.latency.features import SharedFeatures
from tdbnas.spaces import CATEGORICAL_SPACES, detector_cost, get_space

FBNET = CATEGORICAL_SPACES.get("fbnet")
SLOW_SLOT = 9  # "l10": k5_e6 there costs a planted extra 0.4 ms


def physics_truth(genomes, scale=1.0):
    """ms = per-op-kind rates x MAdds + 0.05 ms per op + a slot-specific extra: the kind of device
    where an op kind's cost is shared by every slot, with one slot that departs from it."""
    shared = SharedFeatures(FBNET)
    x = dict(zip(shared.physics, shared.physics_matrix(genomes).T))
    ops = sum(v for k, v in x.items() if k.endswith(".count"))
    ms = 1e-6 * (1.0 * x["conv1x1.madds"] + 4.0 * x["dwconv3x3.madds"] + 3.0 * x["dwconv5x5.madds"]
                 + 2.5 * x["gconv1x1.madds"]) + 1e-6 * x["shuffle.activations"] + 0.05 * ops + 2.0
    slow = FBNET.slots[SLOW_SLOT].choices.index("k5_e6")
    return scale * ms + 0.4 * (np.asarray(genomes)[:, SLOW_SLOT] == slow)


def noisy(y, seed, level=0.01):
    return y * (1 + np.random.default_rng(seed).normal(0, level, len(y)))


@pytest.fixture(scope="module")
def data():
    genomes = cm.sample_genomes(FBNET, 1400, seed=0)
    return genomes, physics_truth(genomes)


def held_out(model, genomes, truth):
    return cm.error_report(model.predict_genomes(genomes), truth)


def test_shared_features_learn_from_few_samples_where_one_hot_cannot(data):
    genomes, truth = data
    train, test = slice(0, 40), slice(400, None)
    y = noisy(truth[train], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cm.CostModelWarning)
        shared = cm.fit_cost_model(FBNET, genomes[train], y)
        onehot = cm.fit_cost_model(FBNET, genomes[train], y, features="onehot")
    s, o = held_out(shared, genomes[test], truth[test]), held_out(onehot, genomes[test], truth[test])
    assert shared.features == "shared" and shared.metadata["ridge_selection"] == "cv"
    assert s.spearman > 0.97 and s.median_ape_pct < 2.0
    assert o.spearman < s.spearman - 0.1  # 176 independent per-slot costs from 40 samples


def test_deviations_pick_up_a_slot_specific_cost(data):
    genomes, truth = data
    model = cm.fit_cost_model(FBNET, genomes[:400], noisy(truth[:400], 2, level=0.002))
    assert model.metadata["deviation_ratio"] is not None  # cross-validation kept the deviations
    effect = dict(model.terms())[f"l{SLOW_SLOT + 1}=k5_e6"]
    assert 0.2 < effect < 0.6  # the planted 0.4 ms, shrunk a little toward the shared cost


def test_the_old_unpenalised_default_overfits_and_cross_validation_does_not(data):
    genomes, truth = data
    n = 190  # just above the one-hot model's 177 coefficients
    y = noisy(truth[:n], 3, level=0.03)
    with pytest.warns(cm.CostModelWarning, match="likely overfits"):
        old = cm.fit_cost_model(FBNET, genomes[:n], y, features="onehot", ridge=0)
    cv = cm.fit_cost_model(FBNET, genomes[:n], y, features="onehot")
    assert cv.ridge > 0 and cv.metadata["ridge_selection"] == "cv"
    old_error = held_out(old, genomes[400:], truth[400:]).median_ape_pct
    cv_error = held_out(cv, genomes[400:], truth[400:]).median_ape_pct
    assert cv_error < 0.6 * old_error


def test_too_few_samples_are_refused_and_few_are_warned_about(data):
    genomes, truth = data
    with pytest.raises(ValueError, match="cross-validation needs at least 10; sample more") as info:
        cm.fit_cost_model(FBNET, genomes[:8], truth[:8])
    assert "\n" not in str(info.value)
    shared = len(SharedFeatures(FBNET)) - int(SharedFeatures(FBNET).deviation_mask().sum())
    with pytest.warns(cm.CostModelWarning, match=f"20 samples for {shared} shared features") as record:
        model = cm.fit_cost_model(FBNET, genomes[:20], truth[:20])
    assert str(record[0].message) in model.metadata["warnings"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", cm.CostModelWarning)
        cm.fit_cost_model(FBNET, genomes[:100], noisy(truth[:100], 4))  # enough: no warning


def test_an_offset_on_a_base_model_needs_fewer_samples(data, tmp_path):
    """Device B runs 1.3x device A plus a cost of its own per skip; A's model is the base."""
    genomes, truth_a = data
    skip = FBNET.slots[0].choices.index("skip")
    truth_b = 1.3 * truth_a + 0.3 * (genomes == skip).sum(axis=1)
    base = cm.fit_cost_model(FBNET, genomes[:300], noisy(truth_a[:300], 5))
    y = noisy(truth_b[300:315], 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cm.CostModelWarning)
        alone = cm.fit_cost_model(FBNET, genomes[300:315], y)
        offset = cm.fit_cost_model(FBNET, genomes[300:315], y, base=base, base_mode="offset")
        feature = cm.fit_cost_model(FBNET, genomes[300:315], y, base=base, base_mode="feature")
    test = slice(400, None)
    errors = {name: held_out(m, genomes[test], truth_b[test]).median_ape_pct
              for name, m in (("alone", alone), ("offset", offset), ("feature", feature))}
    assert errors["offset"] < 0.7 * errors["alone"] and errors["feature"] < 0.7 * errors["alone"]
    path = offset.save(tmp_path / "b.json")
    loaded = cm.CostModel.load(path, FBNET)
    assert loaded.base is not None and loaded.base_mode == "offset"
    np.testing.assert_allclose(loaded.predict_genomes(genomes[test]), offset.predict_genomes(genomes[test]))
    data_json = json.loads(path.read_text())
    data_json["base_mode"] = "sideways"
    (tmp_path / "bad.json").write_text(json.dumps(data_json))
    with pytest.raises(cm.CostModelError, match="base_mode must be one of offset, feature"):
        cm.CostModel.load(tmp_path / "bad.json")


def test_cross_validation_reports_the_model_and_both_baselines(data):
    genomes, truth = data
    reports = cm.cross_validate(FBNET, genomes[:120], noisy(truth[:120], 7), folds=4)
    assert set(reports) == {"model", "madds", "op-count"} and all(r.n == 120 for r in reports.values())
    assert reports["model"].spearman > reports["op-count"].spearman > 0
    assert reports["model"].spearman > reports["madds"].spearman
    assert -1 <= reports["model"].kendall <= 1 and reports["model"].kendall < reports["model"].spearman


SMALL = get_space("tdb-lite")  # an architecture-language space


def test_architecture_language_spaces_take_physics_from_the_decoded_detector(tmp_path):
    genomes = cm.sample_genomes(SMALL, 260, seed=1)
    archs = [SMALL.decode(tuple(map(int, g))) for g in genomes]
    features = SharedFeatures(SMALL, resolution=320)
    madds = features.madds(genomes[:5])
    assert list(madds) == [detector_cost(a, 320).total.madds for a in archs[:5]]
    truth = np.array([modelled.modelled_detector_ms(a, 320, "edgetpu").total_ms for a in archs])
    model = cm.fit_cost_model(SMALL, genomes[:60], truth[:60], resolution=320)
    assert held_out(model, genomes[60:], truth[60:]).spearman > 0.9
    loaded = cm.CostModel.load(model.save(tmp_path / "m.json"))  # predicts without being given the space
    np.testing.assert_allclose(loaded.predict_genomes(genomes[60:]), model.predict_genomes(genomes[60:]))
    np.testing.assert_allclose(loaded.predict(SMALL, archs[60:70]), model.predict_genomes(genomes[60:70]))
