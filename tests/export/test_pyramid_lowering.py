"""Keras lowering of detectors with a feature pyramid: the float Keras model computes the torch
model's function (oracle, <= 1e-4) on random members of a backbone + pyramid space and on the
named pyramids, at odd non-square sizes (uneven pooling, non-integer nearest resizes); the int8
model holds only int8 ops the Edge TPU table lists; and `tdbnas export --verify` ships one."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import keras  # noqa: E402

from tdbnas.detection.model import SSDLite  # noqa: E402
from tdbnas.export.keras_detector import OUTPUT_NAMES, build_detector  # noqa: E402
from tdbnas.export.weights import transfer_weights  # noqa: E402
from tdbnas.spaces import PyramidChoices, get_space, pyramid_space, resolve_arch  # noqa: E402

pytestmark = [pytest.mark.tflite, pytest.mark.torch]

TOLERANCE = 1e-4
NUM_CLASSES = 3
SEARCHED = ("mobiledet-edgetpu+fpn_p3-7_c64_sc_dw,p5_gp_0_4,p4_sum_1_5,p3_gp_0_6,p6_sum_3_7,p7_gp_4_8,p5_sum_5_9,"
            "p4_sum_6_10")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_keras():
    yield
    keras.backend.clear_session()


def _randomise(model, seed):
    """BN statistics and affine terms away from (0, 1), non-zero biases: a lowering that drops or
    misplaces a BN, or merges maps in another order, cannot pass."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) * 3 + 1)
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=generator) * 0.4 - 0.2)
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(torch.rand(module.bias.shape, generator=generator) * 0.4 - 0.2)
    return model.eval()


def _assert_matches_torch(arch, size, seed=0, width_multiplier=1.0):
    torch.manual_seed(seed)
    reference = _randomise(SSDLite(arch, num_classes=NUM_CLASSES, width_multiplier=width_multiplier), seed)
    lowered = build_detector(arch, size, num_classes=NUM_CLASSES, width_multiplier=width_multiplier)
    report = transfer_weights(reference, lowered)
    assert len(report.copied) == len(reference.state_dict()) - len(report.ignored)
    images = np.random.default_rng(seed).uniform(-1, 1, (1, *size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in reference(torch.from_numpy(images).permute(0, 3, 1, 2))]
    got = [np.asarray(t) for t in lowered(images, training=False)]
    for name, want, have in zip(OUTPUT_NAMES, expected, got):
        assert have.shape == want.shape, name
        assert want.std() > 0.05, f"{name}: degenerate reference output"
        error = np.abs(have - want).max()
        assert error <= TOLERANCE, f"{name}: max abs difference {error:.2e}"


# 67x45: P3..P7 are 9x6, 5x3, 3x2, 2x1, 1x1, so every upsampling has a non-integer ratio and
# every pooling an odd edge; 64x96 has the even case.
@pytest.mark.parametrize("text, size", [("mobiledet-edgetpu+fpn", (67, 45)), ("mobiledet-cpu+nasfpn-lite", (64, 96)),
                                        (SEARCHED, (67, 45))])
def test_named_and_searched_pyramids_match_torch(text, size):
    _assert_matches_torch(resolve_arch(text), size)


def test_repeat_then_pick_is_the_half_pixel_nearest_resize():
    """The Keras upsampling's plan (repeat k times, keep some rows) reads exactly the source
    rows of the nearest resize, for every upsampling between the sizes a pyramid meets."""
    from tdbnas.export.keras_pyramid import nearest_runs
    from tdbnas.spaces.nn.pyramid import nearest_indices

    for size_in in range(1, 42):
        for size_out in range(size_in, 84):
            k, runs = nearest_runs(size_in, size_out)
            repeated = [row for row in range(size_in) for _ in range(k)]
            picked = [repeated[i] for start, stop in runs for i in range(start, stop)]
            assert picked == list(nearest_indices(size_in, size_out)), (size_in, size_out)
    assert nearest_runs(5, 10) == (2, ((0, 10),))  # an exact 2x keeps the whole repeat: no slice
    assert nearest_runs(3, 5) == (2, ((0, 3), (4, 6)))  # 0 0 1 2 2: the second copy of row 1 is dropped


@pytest.mark.parametrize("seed", [0, 1])
def test_random_members_of_a_pyramid_space_match_torch(seed):
    space = pyramid_space(get_space("tdb-lite"), PyramidChoices(width=32, stack=2, extra="conv" if seed else "pool"))
    # The second member is built at width 0.75: the pyramid width comes from TF's rounding too.
    _assert_matches_torch(space.sample(seed), (45, 70), seed, width_multiplier=1.0 - 0.25 * seed)


@pytest.mark.slow
def test_the_full_nasfpn_matches_torch():
    _assert_matches_torch(resolve_arch("mobiledet-edgetpu+nasfpn"), (67, 45))


def test_int8_model_maps_the_pyramid_to_edgetpu_ops():
    from tdbnas.export.edgetpu import compatibility
    from tdbnas.export.tflite import convert, list_ops, non_int8_ops, random_representative_data

    model = build_detector(resolve_arch(SEARCHED), 96, num_classes=NUM_CLASSES)
    data = convert(model, precision="int8", representative_data=random_representative_data((1, 96, 96, 3), 4),
                   num_samples=4)
    ops = {op.op for op in list_ops(data)}
    assert {"MAX_POOL_2D", "CONCATENATION", "RESHAPE", "REDUCE_MAX", "LOGISTIC", "MUL", "ADD"} <= ops
    # XNNPACK does not delegate the int8 resize: each one would cut the CPU graph in two.
    assert "RESIZE_NEAREST_NEIGHBOR" not in ops
    assert non_int8_ops(data) == []
    assert compatibility(data).fully_mapped


@pytest.mark.slow
def test_export_and_verify_a_detector_with_a_searched_pyramid(tmp_path):
    from tdbnas.cli.main import main
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", SynthConfig(num_train=8, num_val=4, image_size=64),
                                   progress=False)
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = SSDLite(resolve_arch(SEARCHED), num_classes=6)
    with torch.no_grad():
        for head in model.class_heads:
            head.pointwise.bias.normal_(-1.0, 1.5)
    torch.save(model.state_dict(), run / "model.pt")
    (run / "config.json").write_text(json.dumps({"arch": SEARCHED, "data": str(data), "resolution": 64}))
    out = run / "m.tflite"
    assert main(["export", "--weights", str(run / "model.pt"), "--out", str(out), "--calibration-images", "8",
                 "--verify", "--no-progress"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["metadata"]["arch"] == resolve_arch(SEARCHED).encode()
    assert report["metadata"]["anchors"]["head"]["from_features"] == ["P3", "P4", "P5", "P6", "P7"]
    assert report["non_int8_outside_postprocess"] == [] and report["edgetpu"]["fully_mapped"]
    assert max(report["keras_vs_torch_max_abs"].values()) < 1e-3
    verify = report["verify"]
    assert verify["images"] == 4 and verify["has_postprocess_op"]
    assert set(verify["torch"]) == set(verify["tflite"]) >= {"mAP", "mAP_50"}
    # Untrained weights (scores spread by hand), so int8 reorders many near-tied boxes; still, the
    # typical confident torch box has a same-class int8 box over it (0.63 when written).
    assert verify["box_agreement"]["torch_detections_compared"] > 0
    assert verify["box_agreement"]["median_iou"] > 0.5


def test_onnx_export_of_a_pyramid_detector_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    from tdbnas.export.onnx_export import compare_with_torch, export_onnx

    model = _randomise(SSDLite(resolve_arch(SEARCHED), num_classes=NUM_CLASSES), 3)
    path = export_onnx(model, (67, 45), tmp_path / "m.onnx")  # the resize is two gathers: no nearest-exact op
    images = np.random.default_rng(3).uniform(-1, 1, (1, 3, 67, 45)).astype(np.float32)
    errors = compare_with_torch(path, model, images)
    assert max(errors["box_deltas_max_rel"], errors["class_logits_max_rel"]) < 1e-3
