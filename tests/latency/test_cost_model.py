"""The learned linear cost model: feature layout, vectorised prediction, JSON round trip and
refusals, and recovery of synthetic ground truths (with and without interactions)."""

import json

import numpy as np
import pytest

from tdbnas.latency import cost_model as cm
from tdbnas.latency import modelled
from tdbnas.spaces import ArchSpec, BlockSpace, get_space
from tdbnas.spaces.space import SearchSpace, Slot

# A MobileDets-like skeleton small enough for fast fits: C4 after b4 (stride 16), C5 after b5.
OPS = ["ir_k3_e4", "er_k3_e4", "tk_k3_i0.25_o0.75"]
SMALL = BlockSpace.from_description({"name": "small-tdb", "blocks": [
    {"name": "stem", "layers": 1, "stride": 2, "widths": [32], "ops": ["conv_k3"]},
    {"name": "b1", "layers": 1, "stride": 1, "widths": [16, 24], "ops": OPS[:2]},
    {"name": "b2", "layers": 2, "stride": 2, "widths": [24, 32], "ops": OPS, "skippable": True},
    {"name": "b3", "layers": 2, "stride": 2, "widths": [40, 64], "ops": OPS, "skippable": True},
    {"name": "b4", "layers": 2, "stride": 2, "widths": [72, 96], "ops": OPS, "skippable": True},
    {"name": "b5", "layers": 1, "stride": 2, "widths": [120, 160], "ops": OPS}]})


class TinySpace(SearchSpace):
    """Not a BlockSpace: three slots, one of them fixed (a single possible value)."""

    name = "tiny"

    @property
    def slots(self):
        return (Slot("a", (16, 24, 32)), Slot("fixed", ("x",)), Slot("b", (8, 16)))

    def decode(self, genome):
        a, _, b = self.check_genome(genome)
        return ArchSpec.parse(f"conv_k3_s2_c{self.slots[0].choices[a]}/ds_k3_c{self.slots[2].choices[b]}")

    def encode(self, arch):
        raise NotImplementedError

    def layer_configs(self, resolution, width_multiplier=1.0):
        return frozenset()


def edgetpu_ms(arch):
    return modelled.modelled_detector_ms(arch, 320, "edgetpu").total_ms


# ---- layout ---------------------------------------------------------------------------------
def test_block_space_layout_is_one_hot_per_slot_plus_tunas_crosses():
    space = BlockSpace.from_description({"name": "two-blocks", "blocks": [
        {"name": "stem", "layers": 1, "stride": 2, "widths": [32], "ops": ["conv_k3"]},
        {"name": "b1", "layers": 1, "stride": 1, "widths": [16, 24], "ops": OPS},
        {"name": "b2", "layers": 2, "stride": 2, "widths": [32], "ops": OPS[:2], "skippable": True}]})
    assert [s.name for s in space.slots] == ["b1.width", "b1.1", "b2.1", "b2.2"]
    main = cm.FeatureLayout.build(space)
    # Treatment coding: every choice but the first; the stem (a single possible value) has none.
    assert main.names() == ["b1.width=24", "b1.1=er_k3_e4", "b1.1=tk_k3_i0.25_o0.75", "b2.1=er_k3_e4",
                            "b2.2=er_k3_e4", "b2.2=skip"]
    cross = cm.FeatureLayout.build(space, cross_terms=True)
    # b1.1 meets its output width b1.width; b2.1 its input width b1.width (b2's width is fixed);
    # b2.2 sees only fixed widths, so it has no cross term.
    assert cross.groups == ((0, 1), (0, 2))
    assert cross.names()[len(main):] == ["b1.width=24 * b1.1=er_k3_e4", "b1.width=24 * b1.1=tk_k3_i0.25_o0.75",
                                         "b1.width=24 * b2.1=er_k3_e4"]


def test_first_layer_crosses_op_with_input_and_output_width():
    layout = cm.FeatureLayout.build(SMALL, cross_terms=True)
    index = {s.name: i for i, s in enumerate(SMALL.slots)}
    assert (index["b2.width"], index["b2.1"], index["b3.width"]) not in layout.groups
    assert tuple(sorted((index["b1.width"], index["b2.1"], index["b2.width"]))) in layout.groups
    three_way = [f for f in layout.features if len(f) == 3]
    assert len(three_way) == 4 * 2  # blocks 2-5: (non-reference ops) x 1 x 1


def test_a_generic_search_space_drops_fixed_slots_and_crosses_adjacent_ones():
    space = TinySpace()
    layout = cm.FeatureLayout.build(space, cross_terms=True)
    assert layout.names()[:3] == ["a=24", "a=32", "b=16"]  # no feature for the fixed slot
    assert layout.groups == ((0, 1), (1, 2)) and len(layout) == 3  # adjacent pairs meet only the fixed slot
    explicit = cm.FeatureLayout.build(space, cross_terms=True, groups=[(0, 2)])
    assert explicit.names()[3:] == ["a=24 * b=16", "a=32 * b=16"]


def test_encoding_is_the_row_by_row_definition():
    layout = cm.FeatureLayout.build(SMALL, cross_terms=True)
    genomes = cm.sample_genomes(SMALL, 50, seed=3)
    expected = np.array([[float(all(g[s] == c for s, c in f)) for f in layout.features] for g in genomes])
    np.testing.assert_array_equal(layout.encode(genomes), expected)


def test_bad_genomes_are_named():
    layout = cm.FeatureLayout.build(SMALL)
    with pytest.raises(ValueError, match="out of range for slot 'b1.1'"):
        layout.encode([[0, 5] + [0] * (len(SMALL.slots) - 2)])
    with pytest.raises(ValueError, match=r"genomes must be \(n, 13\)"):
        layout.encode([[0, 1]])


# ---- fitting and prediction -----------------------------------------------------------------
def test_a_linear_truth_is_recovered_and_prediction_is_vectorised():
    space = get_space("ibn")
    layout = cm.FeatureLayout.build(space)
    rng = np.random.default_rng(0)
    weights, bias = rng.uniform(-0.3, 0.6, len(layout)), 8.0
    genomes = cm.sample_genomes(space, 600, seed=1)
    truth = bias + layout.encode(genomes) @ weights
    noisy = truth * (1 + rng.normal(0, 0.002, len(truth)))
    model = cm.fit_cost_model(space, genomes[:500], noisy[:500], features="onehot", ridge=0)
    np.testing.assert_allclose(model.coefficients, weights, atol=0.02)
    held_out = cm.error_report(model.predict_genomes(genomes[500:]), truth[500:])
    assert held_out.median_ape_pct < 0.3 and held_out.within_10_pct == 1.0 and held_out.spearman > 0.99
    one_by_one = [model.predict_genomes(g)[0] for g in genomes[500:]]
    np.testing.assert_allclose(model.predict_genomes(genomes[500:]), one_by_one)
    archs = [space.decode(tuple(map(int, g))) for g in genomes[500:510]]
    np.testing.assert_allclose(model.predict(space, archs), one_by_one[:10])


def test_cross_terms_capture_interactions_of_a_modelled_edgetpu_truth():
    """Truth: the modelled Edge TPU detector latency (unit costs depend on in/out widths), plus an
    op x width interaction, plus 1% noise. Stated targets: with cross terms the held-out median
    error is under 2% (noise alone gives ~0.7%) and clearly below the main-effects model's."""
    index = {s.name: i for i, s in enumerate(SMALL.slots)}

    def truth(arch):
        genome = SMALL.encode(arch)
        fused_wide = genome[index["b3.1"]] == 1 and genome[index["b3.width"]] == 1  # er at 64 channels
        return edgetpu_ms(arch) + (0.6 if fused_wide else 0.0)

    rng = np.random.default_rng(7)
    noisy = lambda arch: truth(arch) * (1 + rng.normal(0, 0.01))  # noqa: E731
    main = cm.fit(SMALL, 500, noisy, holdout=0.3, seed=11, features="onehot", ridge=0)
    rng = np.random.default_rng(7)
    cross = cm.fit(SMALL, 500, noisy, holdout=0.3, seed=11, features="onehot", cross_terms=True, ridge=0)
    assert cross.holdout.median_ape_pct < 2.0 and cross.holdout.within_10_pct == 1.0
    assert cross.holdout.median_ape_pct < 0.75 * main.holdout.median_ape_pct
    assert cross.holdout.spearman > main.holdout.spearman
    effect = dict(cross.model.terms())["b3.width=64 * b3.1=er_k3_e4"]
    assert 0.35 < effect < 0.85  # the planted +0.6 ms (plus whatever the modelled truth itself has)


def test_too_few_samples_for_the_features_is_one_clear_error():
    with pytest.raises(ValueError, match=r"need at least 337 samples, or a ridge penalty") as info:
        cm.fit(get_space("tdb"), 100, edgetpu_ms, features="onehot", ridge=0)
    assert "\n" not in str(info.value)
    genomes = cm.sample_genomes(SMALL, 10)
    with pytest.raises(ValueError, match="10 training architectures for 23 features"):
        cm.fit_cost_model(SMALL, genomes, np.ones(10), features="onehot", ridge=0)
    with pytest.warns(cm.CostModelWarning, match="likely overfits"):  # underdetermined is fine, with a warning
        ridge = cm.fit_cost_model(SMALL, genomes, np.arange(1, 11, dtype=float), features="onehot", ridge=0.1)
    assert np.isfinite(ridge.predict_genomes(genomes)).all()


def test_ridge_shrinks_the_coefficients():
    genomes = cm.sample_genomes(SMALL, 80, seed=2)
    y = np.array([edgetpu_ms(SMALL.decode(tuple(map(int, g)))) for g in genomes])
    norms = [np.linalg.norm(cm.fit_cost_model(SMALL, genomes, y, features="onehot", ridge=r).coefficients)
             for r in (0, 1, 100)]
    assert norms[0] > norms[1] > norms[2]


def test_collection_checks_the_measurements_and_samples_distinct_members():
    genomes = cm.sample_genomes(SMALL, 200, seed=0)
    assert len({tuple(g) for g in genomes}) == 200
    with pytest.raises(ValueError, match="has only 6 members"):
        cm.sample_genomes(TinySpace(), 7)
    with pytest.raises(ValueError, match=r"returned -1\.0 ms for conv_k3_s2_c32"):
        cm.collect_latencies(SMALL, 5, lambda arch: -1.0)
    with pytest.raises(ValueError, match="exactly one of"):
        cm.collect_latencies(SMALL, 5)
    data = cm.collect_latencies(TinySpace(), 6, measure_many=lambda archs: [1.0 + i for i in range(len(archs))])
    assert data.genomes.shape == (6, 3) and set(data.latency_ms) == {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}


# ---- JSON -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    with pytest.warns(cm.CostModelWarning, match="likely overfits"):  # 90 samples, 61 features, fixed penalty
        return cm.fit(SMALL, 120, edgetpu_ms, holdout=0.25, features="onehot", cross_terms=True, ridge=0.01,
                      seed=5, metadata={"profile": "edgetpu", "kind": "modelled"})


def test_json_round_trip(fitted, tmp_path):
    path = fitted.model.save(tmp_path / "m.json")
    data = json.loads(path.read_text())
    assert data["format"] == cm.FORMAT and data["schema_version"] == cm.SCHEMA_VERSION
    assert data["space"] == "small-tdb" and data["metadata"]["kind"] == "modelled"
    assert data["metadata"]["holdout_error"]["n"] == 30 and len(data["feature_names"]) == len(data["coefficients"])
    loaded = cm.CostModel.load(path, SMALL)
    assert loaded.layout == fitted.model.layout and loaded.ridge == 0.01
    genomes = cm.sample_genomes(SMALL, 40, seed=9)
    np.testing.assert_allclose(loaded.predict_genomes(genomes), fitted.model.predict_genomes(genomes))


def test_a_model_refuses_another_space(fitted, tmp_path):
    path = fitted.model.save(tmp_path / "m.json")
    with pytest.raises(cm.CostModelError, match="fitted on space 'small-tdb', not 'ibn'"):
        cm.CostModel.load(path, get_space("ibn"))
    impostor = BlockSpace.from_description({**SMALL.to_description(), "blocks": SMALL.to_description()["blocks"][:-1]})
    with pytest.raises(cm.CostModelError, match="slot layout differs"):
        fitted.model.predict(impostor, [])
    with pytest.raises(cm.CostModelError, match="not 'ibn'"):
        fitted.model.as_feasibility(get_space("ibn"), 5.0)


@pytest.mark.parametrize("edit, message", [
    (lambda d: "{ not json", "is not JSON"),
    (lambda d: {**d, "format": "something-else"}, "not a tdbnas cost model"),
    (lambda d: {**d, "schema_version": 99}, "schema version 99"),
    (lambda d: {**d, "coefficients": d["coefficients"][:-1]}, "features but"),
    (lambda d: {**d, "features": [[[0, 9]]] + d["features"][1:]}, "outside the layout"),
    (lambda d: {k: v for k, v in d.items() if k != "intercept"}, "missing field 'intercept'"),
    (lambda d: {**d, "intercept": float("nan")}, "finite"),
])
def test_malformed_model_files_give_one_clear_line(fitted, tmp_path, edit, message):
    data = edit(fitted.model.to_json())
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(cm.CostModelError, match=message) as info:
        cm.CostModel.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
