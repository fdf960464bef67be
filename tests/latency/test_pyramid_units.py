"""Latency units of detectors with a feature pyramid: keys, enumeration over a backbone + pyramid
space, modelled accelerator costs of the new ops, predictions, and int8 micro-models built with
export's lowering (a merging cell's has one input per map it merges)."""

import numpy as np
import pytest

from tdbnas.latency.modelled import is_supported, modelled_unit_ms, unit_ops, whole_model
from tdbnas.latency.predictor import unit_keys
from tdbnas.latency.profiles import get_predictor, units_for
from tdbnas.latency.space_predictor import SpacePredictor
from tdbnas.latency.table import LatencyTable
from tdbnas.latency.units import HeadPredictor, detector_units, space_units
from tdbnas.spaces import PyramidChoices, SSDLiteHead, get_space, pyramid_space, resolve_arch
from tdbnas.spaces.pyramid_layout import PyramidCell, PyramidDownConv, PyramidLateral, PyramidResample

RES = (160, 160)


@pytest.fixture(scope="module")
def space():
    return pyramid_space(get_space("tdb-lite"), PyramidChoices(stack=2))


@pytest.fixture(scope="module")
def lut(tmp_path_factory):
    table = LatencyTable(tmp_path_factory.mktemp("pyramid-lut") / "lut.sqlite")
    yield table
    table.close()


def test_units_run_backbone_pyramid_head_in_order():
    arch = resolve_arch("mobiledet-edgetpu+nasfpn-lite")
    units = detector_units(arch, 320)
    kinds = [type(u).__name__ for u in units]
    first_pyramid = kinds.index("PyramidLateral")
    assert kinds[first_pyramid - 1] == "LayerConfig" and "LayerConfig" not in kinds[first_pyramid:]
    assert sum(isinstance(u, PyramidCell) for u in units) == 7 * 3
    predictors = [u for u in units if isinstance(u, HeadPredictor)]
    assert [p.in_hw for p in predictors[::2]] == [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3)]
    assert all(p.in_channels == 64 for p in predictors) and kinds[-1] == "HeadPredictor"
    # the published cell's absorbed maps show up in the keys
    assert "fpn_cell_gp_dw@10x10:64+1" in {u.key for u in units}


@pytest.mark.parametrize("head, wm, resolution", [(SSDLiteHead(), 1.0, (320, 320)),
                                                  (SSDLiteHead(num_classes=5), 0.75, (640, 320))])
def test_fast_unit_keys_equal_detector_units(space, head, wm, resolution):
    for seed in range(5):
        arch = space.sample(seed)
        assert unit_keys(arch, resolution, head, wm) == tuple(
            u.key for u in detector_units(arch, resolution, head=head, width_multiplier=wm))


def test_space_units_cover_every_sampled_member(space):
    units = space_units(space, RES)
    assert units == units_for(RES, space=space)
    pyramid_units = [u for u in units if isinstance(u, (PyramidLateral, PyramidResample, PyramidDownConv,
                                                        PyramidCell))]
    assert 50 < len(pyramid_units) < 200  # a small table: laterals, resamplings, cells by (op, level, absorbed)
    for seed in range(150):
        missing = [u.key for u in detector_units(space.sample(seed), RES) if u not in units]
        assert missing == []


def test_modelled_ops_of_the_pyramid():
    gp = PyramidCell("gp", (20, 20), 64, 1, True)
    ops = [op.op for op in unit_ops(gp)]
    # gate: global max -> sigmoid -> scale, then the attention add and the absorbed add (ReLU fused),
    # then the separable conv
    assert ops == ["gmax", "logistic", "mul", "add", "add", "dwconv", "conv"]
    up = unit_ops(PyramidResample((5, 5), 64, -2, (20, 20)))
    assert [(op.op, op.out_hw) for op in up] == [("resize", (20, 20))]
    assert [op.op for op in unit_ops(PyramidResample((20, 20), 64, 2))] == ["maxpool", "maxpool"]
    # Edge TPU: every pyramid op is in Coral's table; the Hexagon delegate lists no REDUCE_MAX
    assert all(is_supported(op, "edgetpu") for op in unit_ops(gp))
    assert [op.op for op in unit_ops(gp) if not is_supported(op, "dsp")] == ["gmax"]
    sum_cell = PyramidCell("sum", (20, 20), 64, 1, True)
    assert modelled_unit_ms(gp, "dsp") > modelled_unit_ms(sum_cell, "dsp")
    units = detector_units(resolve_arch("mobiledet-edgetpu+nasfpn-lite"), 320)
    assert whole_model(units, "edgetpu").first_cpu_op is None


def test_modelled_predictions_cover_the_space(space, lut):
    for name in ("edgetpu", "dsp"):
        predictor = get_predictor(name, RES, space=space, table=lut)
        archs = [space.sample(seed) for seed in range(20)]
        many = predictor.predict_many(archs, RES)
        single = [predictor.predict(arch, RES).total_ms for arch in archs]
        assert np.allclose(many, single) and np.all(many > 0)
        genomes = np.array([space.encode(arch) for arch in archs])
        assert np.allclose(SpacePredictor(predictor, space, RES).predict_genomes(genomes), many)
    # a heavier pyramid is predicted slower, all else equal
    base = get_space("tdb-lite").sample(0)
    light, heavy = base.with_pyramid(resolve_arch("mobiledet-edgetpu+fpn-lite").pyramid), \
        base.with_pyramid(resolve_arch("mobiledet-edgetpu+nasfpn-lite").pyramid)
    predictor = get_predictor("edgetpu", RES, archs=[light, heavy], table=lut)
    assert predictor.predict(heavy, RES).total_ms > predictor.predict(light, RES).total_ms


@pytest.mark.tflite
def test_micromodels_of_every_pyramid_part_convert_and_run(tmp_path):
    pytest.importorskip("tensorflow")
    from ai_edge_litert.interpreter import Interpreter

    from tdbnas.latency.micromodels import build_micromodels

    units = [PyramidLateral((10, 10), 40, 32), PyramidResample((10, 10), 32, 2),
             PyramidResample((3, 3), 32, -1, (5, 5)), PyramidDownConv((5, 5), 32, True),
             PyramidCell("gp", (5, 5), 32, 2, False)]
    models = build_micromodels(units, tmp_path)
    for unit in units:
        interpreter = Interpreter(model_path=str(models[unit.key].path))
        interpreter.allocate_tensors()
        inputs = interpreter.get_input_details()
        assert len(inputs) == (4 if isinstance(unit, PyramidCell) else 1)
        for detail in inputs:
            assert detail["dtype"] == np.int8 and tuple(detail["shape"]) == (1, *unit.in_hw, unit.in_channels)
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], np.int8))
        interpreter.invoke()
        output = interpreter.get_output_details()[0]
        assert tuple(output["shape"]) == (1, *unit.out_hw, unit.out_channels)
