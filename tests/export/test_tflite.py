"""TFLite conversion: int8 detectors run in LiteRT close to float, the float file equals Keras,
the lowering maps to the intended TFLite ops (BN folded, ReLU6 fused, HARD_SWISH), the op
report finds float ops, multi-signature files work, bad input fails clearly."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from collections import Counter  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import keras  # noqa: E402

from tdbnas.export.keras_detector import build_detector  # noqa: E402
from tdbnas.export.keras_layers import apply_layer, apply_predictor  # noqa: E402
from tdbnas.export.tflite import (  # noqa: E402
    convert,
    convert_many,
    list_ops,
    non_int8_ops,
    random_representative_data,
    run_tflite,
    save_tflite,
)
from tdbnas.spaces import ArchSpec, LayerConfig, SSDLiteHead, parse_layer  # noqa: E402

pytestmark = pytest.mark.tflite

# Small but complete: hard-swish + SE, a skip, fused IBN, a residual Tucker, ShuffleNet and
# Xception channel-split blocks at strides 1 and 2.
ARCH = ArchSpec.parse("conv_k3_s2_c16_hs/ds_k3_c8_se0.25_hs/ir_k3_s2_e4_c16,skip/er_k3_s2_e4_c24,"
                      "tk_k3_i0.25_o0.75_c24/sh_k3_s2_c48,sh_k5_c48/xc_k3_s2_c64,ir_k3_e4_c64_se0.25_hs")
HEAD = SSDLiteHead(num_classes=3, extra_depths=(64, 32))
SIZE = (64, 96)


def _detector():
    model = build_detector(ARCH, SIZE, num_classes=3, head=HEAD)
    # Trained-looking BN statistics (Keras initialises them to 0 / 1): folding must handle them.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.uniform(-0.5, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(1.0, 4.0, layer.moving_variance.shape))
    return model


@pytest.fixture(scope="module")
def detector():
    return _detector()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return {"calibration": rng.uniform(-1, 1, (32, *SIZE, 3)).astype(np.float32),
            "test": rng.uniform(-1, 1, (4, *SIZE, 3)).astype(np.float32)}


@pytest.fixture(scope="module")
def int8_model(detector, images):
    return convert(detector, representative_data=images["calibration"], num_samples=32)


def _float_outputs(model, x):
    return [np.asarray(t) for t in model(x, training=False)]


def test_int8_detector_runs_in_litert_close_to_float(detector, images, int8_model):
    assert non_int8_ops(int8_model) == []
    outputs = run_tflite(int8_model, images["test"])
    for name, want, have in zip(("box_deltas", "class_logits"), _float_outputs(detector, images["test"]),
                                outputs.values()):
        assert have.shape == want.shape
        correlation = np.corrcoef(want.ravel(), have.ravel())[0, 1]
        relative_rmse = np.sqrt(np.mean((have - want) ** 2)) / want.std()
        # Measured: correlation 0.99996+, RMSE about 1 % of the spread (int8 steps of 1/256 of each
        # tensor's range, ~25 layers deep). A wrong scale, zero point or folding breaks both.
        assert correlation > 0.998, f"{name}: correlation {correlation:.5f}"
        assert relative_rmse < 0.05, f"{name}: RMSE is {relative_rmse:.1%} of the output spread"


def test_float_tflite_equals_keras_and_every_op_is_reported_as_float(detector, images):
    data = convert(detector, precision="float32", input_type="float32", output_type="float32")
    outputs = list(run_tflite(data, images["test"][:1]).values())
    for want, have in zip(_float_outputs(detector, images["test"][:1]), outputs):
        assert np.abs(have - want).max() <= 1e-4
    ops = list_ops(data)
    assert ops and non_int8_ops(data) == ops


def test_float_outputs_and_uint8_input_are_reported_at_the_edges(detector, images):
    data = convert(detector, representative_data=images["calibration"], num_samples=8,
                   input_type="uint8", output_type="float32")
    flagged = non_int8_ops(data)
    assert [op.op for op in flagged] == ["DEQUANTIZE", "DEQUANTIZE"]
    assert all(op.outputs == ("FLOAT32",) for op in flagged)
    assert "QUANTIZE" in [op.op for op in list_ops(data)]  # uint8 -> int8: integer, not reported
    boxes = run_tflite(data, images["test"][:1])
    assert next(iter(boxes.values())).dtype == np.float32


def test_lowering_maps_to_fused_tflite_ops():
    """BN folds into the convs, ReLU6 fuses into them, hard-swish is one HARD_SWISH op."""
    def ops_of(token, channels, residual):
        config = LayerConfig(parse_layer(token), channels, (8, 8), residual)
        x = keras.Input((8, 8, channels), batch_size=1)
        model = keras.Model(x, apply_layer(x, config, name="unit"))
        data = convert(model, representative_data=random_representative_data((1, 8, 8, channels), 4))
        return Counter(op.op for op in list_ops(data))

    assert ops_of("ir_k3_e4_c16", 16, True) == {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 1, "ADD": 1}
    assert ops_of("ir_k3_e4_c16_se0.25_hs", 16, True) == {
        "CONV_2D": 4, "DEPTHWISE_CONV_2D": 1, "HARD_SWISH": 3, "MEAN": 1, "LOGISTIC": 1, "MUL": 1, "ADD": 1}
    assert ops_of("sh_k3_c16", 16, False) == {"STRIDED_SLICE": 2, "CONV_2D": 2, "DEPTHWISE_CONV_2D": 1,
                                              "CONCATENATION": 1}


def test_convert_many_puts_each_model_in_its_own_signature(tmp_path):
    x = keras.Input((6, 10, 16), batch_size=1, name="features")
    layer = keras.Model(x, apply_layer(x, LayerConfig(parse_layer("er_k3_e4_c16"), 16, (6, 10), True), name="u"))
    y = keras.Input((6, 10, 16), batch_size=1, name="features")
    predictor = keras.Model(y, apply_predictor(y, 24, name="p"))
    data = convert_many({"layer": layer, "predictor": predictor}, precision="float32",
                        input_type="float32", output_type="float32")
    path = save_tflite(tmp_path / "units.tflite", data)
    assert path.read_bytes() == data and [p.name for p in tmp_path.iterdir()] == ["units.tflite"]
    sample = np.random.default_rng(2).uniform(-1, 1, (1, 6, 10, 16)).astype(np.float32)
    for key, model in (("layer", layer), ("predictor", predictor)):
        (output,) = run_tflite(path, sample, signature=key).values()
        assert np.abs(output - np.asarray(model(sample))).max() <= 1e-4
    assert {op.subgraph for op in list_ops(data)} == {"layer", "predictor"}
    calibration = {key: random_representative_data((6, 10, 16), 4) for key in ("layer", "predictor")}
    quantized = convert_many({"layer": layer, "predictor": predictor}, representative_data=calibration)
    assert non_int8_ops(quantized) == [] and {op.subgraph for op in list_ops(quantized)} == {"layer", "predictor"}


def test_bad_settings_and_data_are_clear_value_errors(detector):
    shape = f"[{SIZE[0]}, {SIZE[1]}, 3]"
    with pytest.raises(ValueError, match="needs representative_data"):
        convert(detector)
    with pytest.raises(ValueError, match=rf"has shape \(1, 32, 32, 3\); the model takes \{shape}"):
        convert(detector, representative_data=[np.zeros((1, 32, 32, 3), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        convert(detector, representative_data=[np.full((*SIZE, 3), np.nan, np.float32)])
    with pytest.raises(ValueError, match="is empty"):
        convert(detector, representative_data=[])
    with pytest.raises(ValueError, match="precision"):
        convert(detector, precision="int4")
    with pytest.raises(ValueError, match="input_type"):
        convert(detector, representative_data=np.zeros((1, *SIZE, 3), np.float32), input_type="int16")
    with pytest.raises(ValueError, match="float32 model has float32 input"):
        convert(detector, precision="float32")
    with pytest.raises(ValueError, match="identifiers"):
        convert_many({"a-b": detector}, precision="float32", input_type="float32", output_type="float32")
    with pytest.raises(ValueError, match="not a readable .tflite"):
        list_ops(b"definitely not a flatbuffer")
    x = keras.Input((4, 6, 8), batch_size=1)
    tiny = convert(keras.Model(x, keras.layers.Conv2D(8, 1)(x)), precision="float32", input_type="float32",
                   output_type="float32")
    with pytest.raises(ValueError, match=r"inputs must be \[N, 4, 6, 8\] \(NHWC\)"):
        run_tflite(tiny, np.zeros((1, 8, 4, 6), np.float32))
