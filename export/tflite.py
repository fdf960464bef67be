"""Keras model -> TFLite bytes: float32, or full-integer int8 post-training quantization.

Two conversion routes, both TensorFlow's TFLite converter (TF 2.21, Keras 3):

  * `convert` (one model, no signature): a `tf.function` with the model's fixed input shape,
    frozen and converted as a graph (`from_concrete_functions` with the function itself as
    `trackable_obj`, which the converter documents as "use the original concrete function
    conversion pipeline"). Median 0.24 s per int8 micro-model, 3x less than
    `from_keras_model`, which writes and reloads a SavedModel with the variables; a 320x320
    MobileDet-EdgeTPU detector converts in 5 s (float32) and 24 s (int8, 100 calibration
    images). Outputs keep the model's order (tensor names `Identity`, `Identity_1`, ...).
  * `convert(..., signature="serving_default")` and `convert_many`: each model frozen the
    same way, saved as a variable-free SavedModel with one named signature per model (inputs
    and outputs named after the Keras input and output layers), converted with
    `from_saved_model(signature_keys=...)`. The SavedModel round trip costs ~3 s on the full
    detector (27 vs 24 s). Batching 32 micro-models in one file works but costs 1.3x the
    one-by-one total (benchmarks/results/export_convert.md), so the profiler should convert one
    by one. Keras' `ExportArchive` (what `from_keras_model` uses) keeps the variables and took
    33 s instead of 5 s on a float detector at 96x128.

Full-integer int8 uses a representative dataset (calibration) and `TFLITE_BUILTINS_INT8`, so
an op without an int8 kernel fails the conversion instead of silently staying float; with
`allow_float_fallback=True` such ops stay float, and `non_int8_ops` lists them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.export.tflite_inspect import OpInfo, list_ops, non_int8_ops, run_tflite  # re-exported
from tdbnas.spaces.atomic import write_bytes_atomic

PRECISIONS = ("float32", "int8")
INPUT_TYPES = ("int8", "uint8", "float32")
OUTPUT_TYPES = ("int8", "float32")
DEFAULT_CALIBRATION_SAMPLES = 100
# An array [count, H, W, C], an iterable of arrays [H, W, C] or [batch, H, W, C] (optionally
# each wrapped in a one-element list, as TF's own generators yield), or a callable returning one.
RepresentativeData = np.ndarray | Iterable[Any] | Callable[[], Iterable[Any]]


def convert(model: Any, *, precision: str = "int8", representative_data: RepresentativeData | None = None,
            num_samples: int = DEFAULT_CALIBRATION_SAMPLES, input_type: str = "int8", output_type: str = "int8",
            allow_float_fallback: bool = False, signature: str | None = None) -> bytes:
    """Convert one Keras model to TFLite bytes.

    `precision="int8"` needs `representative_data` (float32 NHWC, normalised as the model's
    inputs; at most `num_samples` are used). A model with several inputs (a feature pyramid's
    merging-cell micro-model) takes an iterable of sequences, one array per input, and only
    the frozen-graph route. `input_type` int8 / uint8 / float32 and
    `output_type` int8 / float32 choose the interface (float adds QUANTIZE / DEQUANTIZE at the
    edges). `signature`: None for the fast frozen-graph route (no signature def), or a key to
    get one named signature whose outputs carry the Keras output names (a few seconds more on
    a full detector).
    """
    if len(getattr(model, "inputs", None) or []) > 1:
        if signature is not None:
            raise ValueError("a model with several inputs converts without a signature (signature=None)")
        return _convert_multi_input(model, precision=precision, representative_data=representative_data,
                                    num_samples=num_samples, input_type=input_type, output_type=output_type,
                                    allow_float_fallback=allow_float_fallback)
    spec = _input_spec(model)
    settings = _settings(precision, input_type, output_type, num_samples)
    samples = _calibration(representative_data, spec, num_samples, "model") if precision == "int8" else None
    if signature is not None:
        return convert_many({signature: model}, precision=precision,
                            representative_data=None if samples is None else {signature: samples},
                            num_samples=num_samples, input_type=input_type, output_type=output_type,
                            allow_float_fallback=allow_float_fallback)
    import tensorflow as tf

    function = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    dataset = None if samples is None else (lambda: ([sample] for sample in samples))
    return _run(converter, settings, dataset, allow_float_fallback)


def _convert_multi_input(model: Any, *, precision: str, representative_data: Any, num_samples: int,
                         input_type: str, output_type: str, allow_float_fallback: bool) -> bytes:
    """`convert` for a model with several inputs: frozen-graph route, one calibration array per input."""
    import tensorflow as tf

    settings = _settings(precision, input_type, output_type, num_samples)
    specs = []
    for index, tensor in enumerate(model.inputs):
        shape = tuple(tensor.shape)
        if None in shape[1:]:
            raise ValueError(f"conversion needs static input sizes, input {index} is {shape}")
        specs.append(tf.TensorSpec(shape, tf.float32, name=f"input_{index}"))
    samples: list[list[np.ndarray]] | None = None
    if precision == "int8":
        if representative_data is None:
            raise ValueError("int8 conversion needs representative_data: per sample, one float32 array per input")
        data = representative_data() if callable(representative_data) else representative_data
        samples = []
        for item in data:
            arrays = [np.asarray(a, dtype=np.float32) for a in item]
            shapes = [tuple(a.shape) for a in arrays]
            want = [tuple(spec.shape) for spec in specs]
            if shapes != want:
                raise ValueError(f"representative sample {len(samples)} has shapes {shapes}; the model takes {want}")
            samples.append(arrays)
            if len(samples) == num_samples:
                break
        if not samples:
            raise ValueError("representative_data is empty")
    function = tf.function(lambda *xs: model(list(xs), training=False), input_signature=specs, autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    dataset = None if samples is None else (lambda: (list(sample) for sample in samples))
    return _run(converter, settings, dataset, allow_float_fallback)


def convert_many(models: Mapping[str, Any], *, precision: str = "int8",
                 representative_data: Mapping[str, RepresentativeData] | None = None,
                 num_samples: int = DEFAULT_CALIBRATION_SAMPLES, input_type: str = "int8",
                 output_type: str = "int8", allow_float_fallback: bool = False) -> bytes:
    """Convert several single-input Keras models into one multi-signature .tflite, one signature
    per key of `models` (keys must be identifiers), its inputs and outputs named after the
    Keras input and output layers. Time one with `Interpreter.get_signature_runner(key)`.

    Int8 needs `representative_data[key]` for every model (same forms as `convert`). Batching
    saves no conversion time (1.3x the one-by-one total for 32 micro-models,
    benchmarks/results/export_convert.md); it saves files and interpreter loads."""
    import tensorflow as tf

    if not isinstance(models, Mapping) or not models:
        raise ValueError("convert_many needs a non-empty mapping {signature key: Keras model}")
    bad = [key for key in models if not (isinstance(key, str) and key.isidentifier())]
    if bad:
        raise ValueError(f"signature keys must be identifiers (letters, digits, '_'), got {bad}")
    settings = _settings(precision, input_type, output_type, num_samples)
    specs = {key: _input_spec(model) for key, model in models.items()}
    calibration: dict[str, list[np.ndarray]] = {}
    if precision == "int8":
        if not isinstance(representative_data, Mapping):
            raise ValueError("int8 convert_many needs representative_data as a mapping {signature key: data}")
        missing = [key for key in models if key not in representative_data]
        if missing:
            raise ValueError(f"no representative data for signature(s) {missing}")
        calibration = {key: _calibration(representative_data[key], specs[key], num_samples, key) for key in models}
    # Freeze each model (variables -> constants) and save only the frozen functions: a SavedModel
    # holding the Keras variables (Keras `ExportArchive`, `from_keras_model`) converts 3-10x slower.
    signatures = {key: _frozen_signature(model, specs[key]) for key, model in models.items()}
    with tempfile.TemporaryDirectory(prefix="tdbnas-savedmodel-") as directory:
        with _quiet():
            tf.saved_model.save(tf.Module(), directory, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=list(models))

        def dataset() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
            for key, samples in calibration.items():
                for sample in samples:
                    yield key, {specs[key].name: sample}

        return _run(converter, settings, dataset if calibration else None, allow_float_fallback)


def random_representative_data(shape: Sequence[int], count: int = 8, seed: int = 0,
                               low: float = -1.0, high: float = 1.0) -> list[np.ndarray]:
    """Uniform random calibration inputs: enough for latency micro-models, whose timing does not
    depend on the quantization scales; use real images for a model whose accuracy matters."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(low, high, tuple(shape)).astype(np.float32) for _ in range(count)]


def save_tflite(path: str | Path, data: bytes) -> Path:
    """Write a .tflite atomically (a crash never leaves a truncated model under `path`)."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise ValueError("save_tflite needs the non-empty bytes of a converted model")
    return write_bytes_atomic(path, bytes(data))


# ---- helpers ------------------------------------------------------------------------------
def _settings(precision: str, input_type: str, output_type: str, num_samples: int) -> dict[str, str]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if precision == "float32" and (input_type, output_type) != ("float32", "float32"):
        raise ValueError(f"a float32 model has float32 input and output; got input_type={input_type!r}, "
                         f"output_type={output_type!r} (pass both as 'float32', or precision='int8')")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return {"precision": precision, "input_type": input_type, "output_type": output_type}


def _input_spec(model: Any):
    import tensorflow as tf

    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError("conversion needs a functional Keras model with exactly one input "
                         f"(got {type(model).__name__} with {len(inputs or [])} inputs)")
    shape = tuple(inputs[0].shape)
    if None in shape[1:]:
        raise ValueError(f"conversion needs a static input size (batch may be None), got {shape}")
    name = inputs[0].name if inputs[0].name.isidentifier() else "input"
    return tf.TensorSpec(shape, tf.float32, name=name)


def _calibration(data: RepresentativeData | None, spec: Any, num_samples: int, what: str) -> list[np.ndarray]:
    """Up to `num_samples` float32 arrays of the model's input shape, materialised so the
    converter can iterate them as often as it needs."""
    shape = tuple(spec.shape)
    want = f"[{', '.join(str(v) for v in shape[1:])}]"
    if data is None:
        raise ValueError(f"int8 conversion of {what} needs representative_data: float32 NHWC inputs {want} "
                         "as in deployment (random_representative_data(...) is enough for latency-only models)")
    if callable(data) and not isinstance(data, np.ndarray):
        data = data()
    if isinstance(data, np.ndarray) and data.ndim == len(shape) and tuple(data.shape[1:]) == shape[1:]:
        data = list(data[:, None] if shape[0] in (1, None) else [data])
    try:
        iterator = iter(data)
    except TypeError:
        raise ValueError(f"representative_data for {what} must be an array, an iterable of arrays or a callable "
                         f"returning one, got {type(data).__name__}") from None
    samples = []
    for item in iterator:
        if isinstance(item, (list, tuple)) and len(item) == 1:
            item = item[0]
        array = np.asarray(item, dtype=np.float32)
        if array.shape == shape[1:]:
            array = array[None]
        if array.ndim != len(shape) or array.shape[1:] != shape[1:] or shape[0] not in (None, array.shape[0]):
            raise ValueError(f"representative sample {len(samples)} for {what} has shape {array.shape}; "
                             f"the model takes {want} or [{shape[0]}, ...] (NHWC)")
        if not np.isfinite(array).all():
            raise ValueError(f"representative sample {len(samples)} for {what} holds NaN or infinity")
        samples.append(array)
        if len(samples) == num_samples:
            break
    if not samples:
        raise ValueError(f"representative_data for {what} is empty")
    return samples


def _frozen_signature(model: Any, spec: Any) -> Any:
    """A concrete function returning {output layer name: tensor} with the weights as constants."""
    import tensorflow as tf

    # The converter's own freezing step; TF has no public TF2 spelling of it.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    traced = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    frozen = convert_variables_to_constants_v2(traced.get_concrete_function(), lower_control_flow=False)
    names = list(model.output_names)

    def named(x):
        outputs = frozen(x)
        return dict(zip(names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))

    return tf.function(named, input_signature=[spec], autograph=False).get_concrete_function()


def _run(converter: Any, settings: dict[str, str], dataset: Callable[[], Iterable[Any]] | None,
         allow_float_fallback: bool) -> bytes:
    import tensorflow as tf

    if settings["precision"] == "int8":
        types = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = ([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
                                               if allow_float_fallback else [tf.lite.OpsSet.TFLITE_BUILTINS_INT8])
        converter.inference_input_type = types[settings["input_type"]]
        converter.inference_output_type = types[settings["output_type"]]
    with _quiet() as log, warnings.catch_warnings():
        # Noise from inside the converter: it asks for input statistics that calibration
        # supplies, and its calibrator uses the deprecated tf.lite.Interpreter.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        try:
            return converter.convert()
        except Exception as exc:
            exc.add_note("converter log (tail):\n" + log()[-4000:])
            raise


@contextlib.contextmanager
def _quiet() -> Iterator[Callable[[], str]]:
    """Send the converter's pages of C++ and Python logging to a temporary file (kept for the
    error note when conversion fails) instead of the terminal."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


__all__ = ["DEFAULT_CALIBRATION_SAMPLES", "INPUT_TYPES", "OUTPUT_TYPES", "PRECISIONS", "OpInfo", "RepresentativeData",
           "convert", "convert_many", "list_ops", "non_int8_ops", "random_representative_data", "run_tflite",
           "save_tflite"]
