"""ONNX export of the torch detector: `torch.onnx`, an ONNX Runtime check, optional static int8.

The exported graph is the same raw-output module export ships as TFLite: input `images`
[1, 3, H, W] float (normalised as in training, `(2/255)·x − 1`), outputs `box_deltas` [1, A, 4]
and `class_logits` [1, A, C]. Decoding and NMS stay outside (`tdbnas.detection.postprocess`),
as in every runtime that lacks the TFLite detection op.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.spaces.atomic import write_bytes_atomic

INPUT_NAME = "images"
OUTPUT_NAMES = ("box_deltas", "class_logits")
DEFAULT_OPSET = 17


def export_onnx(model, resolution: tuple[int, int], path: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Trace `model` (eval mode) at batch 1 and write a checked ONNX file atomically."""
    import onnx
    import torch

    model = model.eval()
    example = torch.zeros(1, 3, *resolution)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TF-'SAME' padding is computed from static shapes while tracing; the warnings say so.
        warnings.simplefilter("ignore")
        # The TorchScript exporter: static shapes suit mobile runtimes, and it needs no onnxscript.
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    proto.doc_string = "tdbnas SSDLite: raw box deltas (y, x, h, w; scales 10/10/5/5) and class logits"
    return write_bytes_atomic(path, proto.SerializeToString())


def run_onnx(path: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs of an exported model for a batch of images [N, 3, H, W] (run one at a time)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: graph clean-up notices are not the user's concern
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    boxes, logits = [], []
    for image in images:
        b, c = session.run(list(OUTPUT_NAMES), {INPUT_NAME: image[None].astype(np.float32)})
        boxes.append(b)
        logits.append(c)
    return np.concatenate(boxes), np.concatenate(logits)


def compare_with_torch(path: str | Path, model, images: np.ndarray) -> dict[str, float]:
    """Max absolute and max relative (to the torch output's range) differences, ORT vs torch."""
    import torch

    with torch.no_grad():
        expected = [t.numpy() for t in model.eval()(torch.as_tensor(images, dtype=torch.float32))]
    actual = run_onnx(path, images)
    report = {}
    for name, a, e in zip(OUTPUT_NAMES, actual, expected):
        diff = float(np.abs(a - e).max())
        report[f"{name}_max_abs"] = diff
        report[f"{name}_max_rel"] = diff / max(float(np.abs(e).max()), 1e-12)
    return report


def quantize_onnx_static(path: str | Path, out: str | Path, calibration: Iterable[np.ndarray], *,
                         per_channel: bool = True) -> Path:
    """ONNX Runtime static int8 quantization (QDQ) calibrated on `calibration` images [3, H, W]."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self, images: Iterable[np.ndarray]):
            self._images = iter(images)

        def get_next(self) -> dict[str, Any] | None:
            image = next(self._images, None)
            return None if image is None else {INPUT_NAME: image[None].astype(np.float32)}

    out = Path(out)
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / out.name
        quantize_static(str(path), str(staged), _Reader(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel)
        return write_bytes_atomic(out, staged.read_bytes())
