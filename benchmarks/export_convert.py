"""How long TFLite conversion takes: a full 320x320 MobileDet-EdgeTPU detector (float32, int8;
target <= 60 s for int8) and 32 latency micro-models, one file each vs one multi-signature file,
with `TFLiteConverter.from_keras_model` on a few of them as the baseline the fast route replaces.

    python benchmarks/export_convert.py                 # writes benchmarks/results/export_convert.{json,md}
    python benchmarks/export_convert.py --calibration 50 --micro 16 --baseline 4

Each micro-model is one profiling unit of the detector (backbone layer, SSDLite extra layer or
predictor) built with export's part functions, int8 with 8 random calibration inputs, as the
profiler builds them. A warm-up conversion runs first (TF initialises lazily).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tdbnas.latency.units import HeadExtra, HeadPredictor, detector_units  # noqa: E402
from tdbnas.spaces import SSDLiteHead, get_reference  # noqa: E402

from _common import summary, write_results  # noqa: E402

MICRO_CALIBRATION = 8


def micro_model(index: int, unit):
    import keras

    from tdbnas.export.keras_layers import apply_extra, apply_layer, apply_predictor

    x = keras.Input((*unit.in_hw, unit.in_channels), batch_size=1, name="x")
    if isinstance(unit, HeadExtra):
        y = apply_extra(x, unit.mid, unit.out, name=f"unit{index}")
    elif isinstance(unit, HeadPredictor):
        y = apply_predictor(x, unit.out_channels, unit.kernel, name=f"unit{index}")
    else:
        y = apply_layer(x, unit, name=f"unit{index}")
    return keras.Model(x, y, name=f"unit{index}")


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def detector_conversion(resolution: int, calibration: int) -> dict:
    from tdbnas.export.keras_detector import build_detector
    from tdbnas.export.tflite import convert, non_int8_ops

    model, build_s = timed(build_detector, get_reference("mobiledet-edgetpu").arch, resolution, num_classes=90)
    data = np.random.default_rng(0).uniform(-1, 1, (calibration, resolution, resolution, 3)).astype(np.float32)
    float_bytes, float_s = timed(convert, model, precision="float32", input_type="float32", output_type="float32")
    int8_bytes, int8_s = timed(convert, model, representative_data=data, num_samples=calibration)
    _, signature_s = timed(convert, model, representative_data=data, num_samples=calibration,
                           signature="serving_default")
    return {"arch": "mobiledet-edgetpu", "resolution": resolution, "num_classes": 90,
            "calibration_samples": calibration,
            "build_s": build_s, "float32_s": float_s, "int8_s": int8_s, "int8_with_signature_s": signature_s,
            "float32_mb": len(float_bytes) / 1e6, "int8_mb": len(int8_bytes) / 1e6,
            "int8_non_int8_ops": [str(op) for op in non_int8_ops(int8_bytes)]}


def micro_conversion(resolution: int, count: int, baseline: int) -> dict:
    import tensorflow as tf

    from tdbnas.export.tflite import convert, convert_many, random_representative_data

    units = list(detector_units(get_reference("mobiledet-edgetpu").arch, resolution, head=SSDLiteHead()))[:count]
    models = {f"unit{i}": micro_model(i, unit) for i, unit in enumerate(units)}
    data = {key: random_representative_data(model.inputs[0].shape, MICRO_CALIBRATION, seed=i)
            for i, (key, model) in enumerate(models.items())}
    one_by_one = []
    for key, model in models.items():
        one_by_one.append(timed(convert, model, representative_data=data[key])[1])
    _, batched_s = timed(convert_many, models, representative_data=data)
    keras_route = []
    for key in list(models)[:baseline]:
        def via_keras(model=models[key], samples=data[key]):
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([s] for s in samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int8
            with contextlib.redirect_stdout(io.StringIO()):
                return converter.convert()
        keras_route.append(timed(via_keras)[1])
    same = sum(one_by_one[:baseline])
    return {"units": [unit.key for unit in units], "calibration_samples": MICRO_CALIBRATION,
            "one_by_one_s": summary(one_by_one), "one_by_one_total_s": sum(one_by_one),
            "batched_total_s": batched_s, "batched_over_one_by_one": batched_s / sum(one_by_one),
            "from_keras_model_s": summary(keras_route) if keras_route else None,
            "from_keras_model_over_fast": sum(keras_route) / same if keras_route else None}


def warm_up() -> None:
    import keras

    from tdbnas.export.tflite import convert, random_representative_data

    x = keras.Input((8, 8, 8), batch_size=1)
    convert(keras.Model(x, keras.layers.Conv2D(8, 3, padding="same")(x)),
            representative_data=random_representative_data((1, 8, 8, 8), 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=320)
    parser.add_argument("--calibration", type=int, default=100, help="int8 calibration images for the detector")
    parser.add_argument("--micro", type=int, default=32, help="number of micro-models")
    parser.add_argument("--baseline", type=int, default=8, help="micro-models also converted with from_keras_model")
    args = parser.parse_args()
    warm_up()
    detector = detector_conversion(args.resolution, args.calibration)
    micro = micro_conversion(args.resolution, args.micro, args.baseline)
    per = micro["one_by_one_s"]
    keras_ratio = micro["from_keras_model_over_fast"] or float("nan")
    markdown = f"""
## Full detector: MobileDet-EdgeTPU, {args.resolution}x{args.resolution}, 90 classes

| step | seconds |
|---|---|
| build Keras model | {detector['build_s']:.1f} |
| float32 conversion | {detector['float32_s']:.1f} |
| int8 conversion ({args.calibration} calibration images) | {detector['int8_s']:.1f} |
| int8 with a named signature (SavedModel route) | {detector['int8_with_signature_s']:.1f} |

Sizes: float32 {detector['float32_mb']:.1f} MB, int8 {detector['int8_mb']:.1f} MB; ops not int8 in the int8 file:
{len(detector['int8_non_int8_ops'])}.

## {args.micro} micro-models (int8, {MICRO_CALIBRATION} calibration inputs each)

| route | seconds |
|---|---|
| `convert`, one file each: median per model | {per['median']:.2f} (min {per['min']:.2f}, max {per['max']:.2f}) |
| `convert`, one file each: total | {micro['one_by_one_total_s']:.1f} |
| `convert_many`, one multi-signature file: total | {micro['batched_total_s']:.1f} |
| batched / one by one | {micro['batched_over_one_by_one']:.2f} |
| `from_keras_model` / `convert` on the first {args.baseline} | {keras_ratio:.2f} |
"""
    json_path, _ = write_results("export_convert", {"detector": detector, "micro": micro}, markdown)
    print(markdown)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
