"""ONNX export: the file checks, ONNX Runtime agrees with torch, static int8 quantization runs."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tdbnas.detection.model import SSDLite  # noqa: E402
from tdbnas.export.onnx_export import compare_with_torch, export_onnx, quantize_onnx_static, run_onnx  # noqa: E402
from tdbnas.spaces import get_reference  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = SSDLite(get_reference("mobiledet-cpu").arch, num_classes=4).eval()
    # Trained-looking batch-norm statistics keep activations in a realistic range.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(1.0, 4.0)
            module.running_mean.uniform_(-0.5, 0.5)
    return model


def test_onnx_runtime_matches_torch(model, tmp_path):
    path = export_onnx(model, (128, 96), tmp_path / "m.onnx")
    images = np.random.default_rng(0).uniform(-1, 1, (2, 3, 128, 96)).astype(np.float32)
    report = compare_with_torch(path, model, images)
    assert report["box_deltas_max_rel"] < 1e-4 and report["class_logits_max_rel"] < 1e-4
    boxes, logits = run_onnx(path, images)
    assert boxes.shape == (2, model.anchors((128, 96)).shape[0], 4) and logits.shape[-1] == 5


def test_static_int8_quantization_stays_close(model, tmp_path):
    path = export_onnx(model, (96, 96), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    calibration = list(rng.uniform(-1, 1, (4, 3, 96, 96)).astype(np.float32))
    quantized = quantize_onnx_static(path, tmp_path / "q.onnx", calibration)
    import onnx

    ops = {node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    images = np.stack(calibration[:2])
    float_logits = run_onnx(path, images)[1]
    int8_logits = run_onnx(quantized, images)[1]
    # Quantization changes values, but not beyond a fraction of the output range.
    assert np.abs(int8_logits - float_logits).max() < 0.25 * np.abs(float_logits).max()
    assert not (tmp_path / ".q.onnx.tmp").exists()
