"""The modelled Edge TPU / DSP profiles: the published facts they must respect, the whole-model
terms (parameter streaming, CPU fallback) and the calibration to the published latencies."""

import json
import math

import pytest

from tdbnas.latency import modelled as m
from tdbnas.latency.profiles import get_predictor
from tdbnas.latency.table import LatencyTable
from tdbnas.latency.units import HeadExtra, HeadPredictor, detector_units
from tdbnas.spaces import IBN, ArchSpec, Conv, FusedIBN, LayerConfig, get_reference
from tdbnas.spaces.mobiledets import MOBILEDET_CPU
from tdbnas.spaces.primitives import layer_primitives

#: The acceptance target; the fit reproduces its calibration points far more closely.
TOLERANCE = 0.15


def ibn_pair(hw, channels):
    fused = LayerConfig(FusedIBN(kernel=3, expansion=4, out=channels), channels, hw, True)
    ibn = LayerConfig(IBN(kernel=3, expansion=4, out=channels), channels, hw, True)
    return fused, ibn


# ---- the facts ------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["edgetpu", "dsp"])
def test_regular_conv_uses_the_hardware_three_times_better_than_depthwise(device):
    # MobileDets §1: ~3x the utilisation at ~7x the FLOPs. 7.0 is the FLOPs ratio of a 3x3 fused
    # conv over 1x1 expansion + 3x3 depthwise at 32 channels: 9*32 / (32 + 9) = 7.02.
    fused, ibn = ibn_pair((40, 40), 32)
    expand, depthwise = layer_primitives(ibn)[:2]
    assert layer_primitives(fused)[0].madds / (expand.madds + depthwise.madds) == pytest.approx(7.02, abs=0.01)
    conv_rate = expand.madds / m.compute_macs(expand, device)
    dw_rate = depthwise.madds / m.compute_macs(depthwise, device)
    assert conv_rate / dw_rate == pytest.approx(3.0)


def test_fused_layers_are_not_priced_by_flops_on_the_edgetpu():
    # Early and narrow, a fused IBN with 5.8x the FLOPs is no slower than the IBN; late and wide
    # it is the expensive one (tensorflow/models official/projects/edgetpu/vision/README.md).
    early_fused, early_ibn = ibn_pair((80, 80), 16)
    late_fused, late_ibn = ibn_pair((20, 20), 96)
    assert m.modelled_unit_ms(early_fused, "edgetpu") < m.modelled_unit_ms(early_ibn, "edgetpu")
    assert m.modelled_unit_ms(late_fused, "edgetpu") > 1.3 * m.modelled_unit_ms(late_ibn, "edgetpu")


def test_dsp_compute_is_counted_on_depth32_padded_shapes():
    aligned = LayerConfig(Conv(kernel=1, out=64), 64, (20, 20), False)
    ragged = LayerConfig(Conv(kernel=1, out=40), 40, (20, 18), False)  # pads to 64 channels, width 20
    (a,), (r,) = layer_primitives(aligned), layer_primitives(ragged)
    assert m.compute_macs(a, "dsp") == a.madds
    assert m.compute_macs(r, "dsp") == 20 * 20 * 64 * 64 > r.madds
    assert m.compute_macs(r, "edgetpu") == r.madds


def test_fitted_conv_rate_stays_below_the_edgetpu_peak():
    assert 1e12 / m.EDGETPU_MS_PER_GMAC < m.EDGETPU_PEAK_MACS_PER_S


# ---- parameter cache ------------------------------------------------------------------------
def test_parameter_streaming_starts_exactly_past_the_cache():
    # A 1x1 conv of 2800 -> 2800 channels holds 7,840,000 int8 weights + 2800 int32 biases,
    # just under 7.5 MiB (7,864,320 bytes); 2800 -> 2808 is 9,312 bytes over.
    under = LayerConfig(Conv(kernel=1, out=2800), 2800, (1, 1), False)
    over = LayerConfig(Conv(kernel=1, out=2808), 2800, (1, 1), False)
    assert m.whole_model([under], "edgetpu").streamed_bytes == 0
    whole = m.whole_model([over], "edgetpu")
    assert whole.param_bytes == 2800 * 2808 + 4 * 2808
    assert whole.streamed_bytes == whole.param_bytes - 7.5 * 2**20 == 9312
    assert whole.streaming_ms == pytest.approx(9312 * m.EDGETPU_MS_PER_MB / 1e6)
    assert m.whole_model([over], "dsp").streaming_ms == 0  # no cache limit is documented for the DSP


def test_a_large_detector_pays_for_streaming_through_the_predictor(tmp_path):
    small, large = get_reference("mobiledet-edgetpu").arch, get_reference("mobiledet-gpu").arch  # 4.2M, 13.1M params
    predictor = get_predictor("edgetpu", 320, archs=[small, large], table=LatencyTable(tmp_path / "lut.sqlite"))
    assert predictor.predict(small, 320).whole_model_ms == 0
    prediction = predictor.predict(large, 320)
    expected = m.whole_model(detector_units(large, 320), "edgetpu")
    assert expected.streamed_bytes > 5e6 and prediction.whole_model_ms == pytest.approx(expected.streaming_ms)
    assert prediction.total_ms == pytest.approx(prediction.raw_sum_ms + expected.streaming_ms)
    assert predictor.predict_many([small, large], 320) == pytest.approx([predictor.predict(a, 320).total_ms
                                                                        for a in (small, large)])


@pytest.mark.parametrize("device", ["edgetpu", "dsp"])
def test_table_predictions_equal_the_model_with_its_whole_model_terms(tmp_path, device):
    archs = [get_reference(name).arch for name in ("mobiledet-cpu", "mobiledet-gpu", "mobilenetv2")]
    predictor = get_predictor(device, 320, archs=archs, table=LatencyTable(tmp_path / "lut.sqlite"))
    expected = [m.modelled_detector_ms(arch, 320, device).total_ms for arch in archs]
    assert predictor.predict_many(archs, 320) == pytest.approx(expected)
    assert [predictor.predict(arch, 320).total_ms for arch in archs] == pytest.approx(expected)


# ---- CPU fallback ---------------------------------------------------------------------------
def relu6_copy(text):
    return ArchSpec.parse(text.replace("_hs", ""))


def test_edgetpu_runs_everything_after_the_first_hard_swish_on_the_cpu():
    arch = ArchSpec.parse(MOBILEDET_CPU)
    units = detector_units(arch, 320)
    whole = m.whole_model(units, "edgetpu")
    assert whole.first_cpu_op == f"{units[0].key} / conv_hswish"  # the stem's HARD_SWISH
    # Oracle: every op from the first unsupported one on at CPU speed, plus that one transfer.
    model, on_cpu, expected = m.DEVICES["edgetpu"], False, 0.0
    for unit in units:
        for op in m.unit_ops(unit):
            if not on_cpu and not m.is_supported(op, "edgetpu"):
                on_cpu, expected = True, expected + m.transfer_ms(op, model)
            expected += m.cpu_ms(op, model) if on_cpu else m.accelerator_ms(op, model)
    total = m.modelled_detector_ms(arch, 320, "edgetpu")
    assert total.total_ms == pytest.approx(expected)
    assert total.total_ms > 5 * m.modelled_detector_ms(relu6_copy(MOBILEDET_CPU), 320, "edgetpu").total_ms
    assert m.whole_model(detector_units(relu6_copy(MOBILEDET_CPU), 320), "edgetpu").fallback_ms == 0


def test_a_later_unsupported_op_keeps_more_of_the_model_on_the_edgetpu():
    blocks = relu6_copy(MOBILEDET_CPU).encode().split("/")
    late = ArchSpec.parse("/".join(blocks[:-1] + [blocks[-1] + "_hs"]))  # hard-swish in the last layer only
    early = ArchSpec.parse("/".join([blocks[0] + "_hs"] + blocks[1:]))  # ... in the stem only
    fallback = {name: m.whole_model(detector_units(a, 320), "edgetpu").fallback_ms
                for name, a in (("late", late), ("early", early))}
    assert 0 < fallback["late"] < fallback["early"]


def test_dsp_runs_only_the_unsupported_5x5_depthwise_on_the_cpu():
    k3 = LayerConfig(IBN(kernel=3, expansion=4, out=32), 32, (40, 40), True)
    k5 = LayerConfig(IBN(kernel=5, expansion=4, out=32), 32, (40, 40), True)
    dw5 = m.unit_ops(k5)[1]
    assert all(m.is_supported(op, "dsp") for op in m.unit_ops(k3)) and not m.is_supported(dw5, "dsp")
    model = m.DEVICES["dsp"]
    assert m.op_ms(dw5, "dsp") == pytest.approx(m.cpu_ms(dw5, model) + m.transfer_ms(dw5, model))
    edgetpu = get_reference("mobiledet-edgetpu").arch  # has 5x5 depthwise layers
    whole = m.whole_model(detector_units(edgetpu, 320), "dsp")
    assert whole.fallback_ms == 0 and whole.first_cpu_op is None  # per op, no single split


# ---- calibration ----------------------------------------------------------------------------
@pytest.mark.parametrize("device, key", [("edgetpu", "pixel4_edgetpu"), ("dsp", "pixel4_dsp")])
def test_predictions_reproduce_the_published_latencies(tmp_path, device, key):
    points = m.published_points(key)
    assert {name for name, _, _ in points} >= ({"mobiledet-edgetpu", "mobilenetv2"} if device == "edgetpu"
                                               else {"mobiledet-dsp"})
    archs = [arch for _, arch, _ in points]
    predictor = get_predictor(device, 320, archs=archs, table=LatencyTable(tmp_path / "lut.sqlite"))
    for name, arch, published in points:
        prediction = predictor.predict(arch, 320)
        assert prediction.kind == "modelled" and prediction.runtime_version == f"modelled-{device}-v{m.VERSION}"
        assert abs(prediction.total_ms / published - 1) < TOLERANCE, name
        assert prediction.total_ms == pytest.approx(published, rel=1e-3)  # exact fit, up to rounded constants


def test_module_constants_are_the_fit():
    assert m.fit_edgetpu()["ms_per_gmac"] == pytest.approx(m.EDGETPU_MS_PER_GMAC, rel=1e-3)
    assert m.fit_edgetpu()["ms_per_mb"] == pytest.approx(m.EDGETPU_MS_PER_MB, rel=1e-3)
    assert m.fit_dsp()["ms_per_gmac"] == pytest.approx(m.DSP_MS_PER_GMAC, rel=1e-3)
    assert m.fit_cpu()["ms_per_gmac"] == pytest.approx(m.CPU_MS_PER_GMAC, rel=1e-3)


def test_the_fit_refuses_calibration_models_that_fall_back():
    with pytest.raises(ValueError, match="fully accelerated"):
        m.detector_terms(ArchSpec.parse(MOBILEDET_CPU), "edgetpu")


# ---- the contract with tdbnas.latency.profiles ----------------------------------------------
def test_profiles_contract_and_every_unit_kind():
    assert set(m.MODELLED_PROFILES) == {"edgetpu", "dsp", "coral-usb", "coral-devboard"} == set(m.DEVICES)
    for device, info in m.MODELLED_PROFILES.items():
        assert info["version"] == m.VERSION and set(info["calibration"]) == {"a", "b"}
        assert "modelled" in info["note"]
        json.dumps(info)
        units = detector_units(get_reference("mobiledet-dsp").arch, 320)
        assert {type(u) for u in units} == {LayerConfig, HeadExtra, HeadPredictor}
        assert all(math.isfinite(m.modelled_unit_ms(u, device)) and m.modelled_unit_ms(u, device) > 0 for u in units)
    with pytest.raises(KeyError, match="no modelled device 'gpu'"):
        m.modelled_unit_ms(units[0], "gpu")
