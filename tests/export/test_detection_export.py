"""Export pipeline: post-processing op, output contract, metadata, Edge TPU report, verification."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.tflite, pytest.mark.torch]
pytest.importorskip("tensorflow")

from tdbnas.cli.main import main  # noqa: E402
from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset  # noqa: E402
from tdbnas.detection.model import SSDLite  # noqa: E402
from tdbnas.spaces import get_reference  # noqa: E402

ARCH = "mobiledet-edgetpu"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset and a model.pt with a run config beside it (weights nudged so scores spread)."""
    root = tmp_path_factory.mktemp("export")
    data = write_synthetic_dataset(root / "data", SynthConfig(num_train=8, num_val=4, image_size=64), progress=False)
    run = root / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = SSDLite(get_reference(ARCH).arch, num_classes=6)
    with torch.no_grad():
        for head in model.class_heads:
            head.pointwise.bias.normal_(-1.0, 1.5)  # confident, varied scores: a meaningful NMS comparison
    torch.save(model.state_dict(), run / "model.pt")
    (run / "config.json").write_text(json.dumps({"arch": ARCH, "data": str(data), "resolution": 64}))
    return run, data


@pytest.fixture(scope="module")
def exported(trained):
    run, _ = trained
    out = run / "m.tflite"
    assert main(["export", "--weights", str(run / "model.pt"), "--out", str(out), "--calibration-images", "8",
                 "--verify", "--no-progress"]) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def test_int8_model_with_the_standard_outputs(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, report = exported
    interpreter = Interpreter(model_path=str(out))
    interpreter.allocate_tensors()
    names = [(d["name"], tuple(d["shape"])) for d in interpreter.get_output_details()]
    assert names == [("TFLite_Detection_PostProcess", (1, 100, 4)), ("TFLite_Detection_PostProcess:1", (1, 100)),
                     ("TFLite_Detection_PostProcess:2", (1, 100)), ("TFLite_Detection_PostProcess:3", (1,))]
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert report["non_int8_outside_postprocess"] == []
    assert report["edgetpu"]["fully_mapped"]  # the dequantize feeding the CPU-side op sits right before it
    assert max(report["keras_vs_torch_max_abs"].values()) < 1e-3  # float32 rounding on logits of range ~10


def test_metadata_travels_inside_and_beside_the_model(exported):
    from tdbnas.export.detection_tflite import read_metadata

    out, report = exported
    inside = read_metadata(out)
    assert inside == report["metadata"]
    assert inside["arch"] == get_reference(ARCH).arch.encode() and inside["labels"][0] == "ellipse"
    assert inside["input"]["normalisation"] == {"scale": pytest.approx(2 / 255), "offset": -1.0}
    assert inside["postprocess"]["scales"] == [10.0, 10.0, 5.0, 5.0]


def test_verification_scores_both_models_with_the_same_evaluator(exported):
    _, report = exported
    verify = report["verify"]
    assert verify["images"] == 4 and verify["has_postprocess_op"]
    assert set(verify["torch"]) == set(verify["tflite"]) >= {"mAP", "mAP_50"}
    assert verify["box_agreement"]["torch_detections_compared"] > 0


def test_the_file_runs_in_a_plain_interpreter_without_tdbnas(exported, tmp_path):
    out, _ = exported
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter
        assert not any(m.startswith(("tdbnas", "torch", "tensorflow")) for m in sys.modules)
        it = Interpreter(model_path={str(out)!r}); it.allocate_tensors()
        x = it.get_input_details()[0]
        it.set_tensor(x["index"], np.zeros(x["shape"], x["dtype"])); it.invoke()
        boxes, classes, scores, count = (it.get_tensor(d["index"]) for d in it.get_output_details())
        assert boxes.shape == (1, 100, 4) and 0 < int(count[0]) <= 100
        assert not any(m.startswith(("tdbnas", "torch", "tensorflow")) for m in sys.modules)
        print("ok", int(count[0]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-2000:]


def test_float_postprocess_op_matches_torch_postprocessing(trained, tmp_path):
    """The oracle for anchors, box coder and class layout: on a float model, the TFLite op's
    regular NMS gives the torch post-processor's boxes, classes and scores."""
    from tdbnas.detection.postprocess import Postprocessor, PostprocessSettings
    from tdbnas.detection.train import load_weights
    from tdbnas.export.detection_tflite import PostprocessOp, convert_detector
    from tdbnas.export.keras_detector import build_detector
    from tdbnas.export.verify import TFLiteDetector
    from tdbnas.export.weights import transfer_weights

    run, _ = trained
    model = SSDLite(get_reference(ARCH).arch, num_classes=6).eval()
    model.load_state_dict(load_weights(run / "model.pt"))
    keras_model = build_detector(model.arch, 64, num_classes=6)
    transfer_weights(model, keras_model)
    op = PostprocessOp(max_detections=20, score_threshold=0.3)
    path = tmp_path / "f.tflite"
    path.write_bytes(convert_detector(keras_model, model.anchors(64), num_classes=6, postprocess=op,
                                      precision="float32", input_type="float32"))
    image = torch.from_numpy(np.random.default_rng(3).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        expected = Postprocessor(model.anchors(64), settings=PostprocessSettings(
            score_threshold=0.3, max_detections=20))(*model(image))[0]
    boxes, classes, scores, count = TFLiteDetector(path).raw(image.permute(0, 2, 3, 1).numpy())
    n = int(count[0])
    assert n == len(expected) > 3
    np.testing.assert_allclose(scores[0, :n], expected.scores.numpy(), atol=1e-4)
    np.testing.assert_array_equal(classes[0, :n].astype(int), expected.labels.numpy())
    np.testing.assert_allclose(np.clip(boxes[0, :n], 0, 1), expected.boxes.numpy(), atol=1e-4)  # torch clips


def test_int8_export_without_images_is_refused_clearly(trained, capsys):
    run, _ = trained
    code = main(["export", "--weights", str(run / "model.pt"), "--arch", ARCH, "--out", str(run / "x.tflite"),
                 "--num-classes", "6", "--resolution", "64", "--data", str(run / "nonexistent")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
