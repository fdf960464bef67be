"""Keras lowering: the float Keras detector computes the torch detector's function (oracle),
for every reference architecture and random members of every space, with folded-BN-relevant
statistics randomised; weight transfer pairs by name and lists what does not pair."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import keras  # noqa: E402

from tdbnas.detection.model import HEAD_NORM, SSDLite  # noqa: E402
from tdbnas.export.keras_detector import OUTPUT_NAMES, build_backbone, build_detector  # noqa: E402
from tdbnas.export.keras_layers import BACKBONE_BN_EPS, HEAD_BN_EPS, apply_layer, apply_predictor  # noqa: E402
from tdbnas.export.weights import WeightTransferError, transfer_weights  # noqa: E402
from tdbnas.spaces import (  # noqa: E402
    ARCHS,
    SPACES,
    ArchSpec,
    LayerConfig,
    SSDLiteHead,
    get_reference,
    get_space,
    parse_layer,
)
from tdbnas.spaces.nn import Backbone  # noqa: E402
from tdbnas.spaces.nn.ops import DEFAULT_NORM  # noqa: E402

pytestmark = [pytest.mark.tflite, pytest.mark.torch]

TOLERANCE = 1e-4  # max abs difference on raw deltas and logits (outputs are O(1), see _randomise)
SIZE = (64, 96)
NUM_CLASSES = 3
SPACE_SAMPLES = 2


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """TensorFlow's thread pools and torch's fight over the two cores of a small machine; one
    torch thread builds and runs these small models 10-30x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_keras():
    yield
    keras.backend.clear_session()


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Trained-looking parameters: BN statistics and affine terms away from (0, 1) so that a
    lowering which drops, misplaces or mis-scales batch norm (eps included) cannot pass, and
    non-zero conv biases; variances of 1..4 keep activations, hence outputs, of order one, where
    float32 rounding stays far below the tolerance."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                uniform(module.running_mean, -0.5, 0.5)
                uniform(module.running_var, 1.0, 4.0)
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.2, 0.2)
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                uniform(module.bias, -0.2, 0.2)
    return model.eval()


def _assert_detector_matches_torch(arch: ArchSpec, size=SIZE, seed: int = 0, width_multiplier: float = 1.0) -> None:
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
        assert want.std() > 0.05, f"{name}: degenerate reference output, the comparison would prove nothing"
        error = np.abs(have - want).max()
        assert error <= TOLERANCE, f"{name}: max abs difference {error:.2e} (output std {want.std():.2f})"


def test_batch_norm_epsilons_are_the_torch_ones():
    assert DEFAULT_NORM.eps == BACKBONE_BN_EPS
    assert HEAD_NORM.eps == HEAD_BN_EPS


# Each reference at one size: non-square even sizes (TF-SAME puts the odd padding pixel of a
# stride-2 conv at the bottom/right) and odd ones (symmetric at the first stride, asymmetric
# further down). The EdgeTPU net first strides with a 5x5 fused conv, DetNAS with 7x7 ShuffleNet
# blocks, so both meet odd sizes.
ODD_SIZES = {"mobiledet-edgetpu": (67, 45), "detnas-300m": (45, 70)}


# The two largest networks (DetNAS 1.3G, ~630 Keras layers) take 5-10 s each on two cores.
LARGE = {"detnas-1.3g", "detnas-large"}


def _marked(*values):
    return pytest.param(*values, marks=pytest.mark.slow) if values[0] in LARGE else pytest.param(*values)


@pytest.mark.parametrize("name", [_marked(name) for name in ARCHS.names()])
def test_every_reference_detector_matches_torch(name):
    _assert_detector_matches_torch(get_reference(name).arch, ODD_SIZES.get(name, SIZE))


# One random member of a large space (its reference architecture is a second one), two elsewhere.
@pytest.mark.parametrize("name, seed", [_marked(n, seed) for n in SPACES.names()
                                        for seed in range(1 if n in LARGE else SPACE_SAMPLES)])
def test_random_members_of_every_space_match_torch(name, seed):
    # The second member is built at width 0.75: every width then comes from TF's rounding.
    _assert_detector_matches_torch(get_space(name).sample(seed), seed=seed, width_multiplier=1.0 - 0.25 * seed)


def test_backbone_endpoints_match_a_standalone_torch_backbone():
    arch = get_reference("mobiledet-cpu").arch
    reference = _randomise(Backbone(arch, out_features=("C3", "C5")), seed=3)
    lowered = build_backbone(arch, (48, 80), out_features=("C3", "C5"))
    transfer_weights(reference, lowered)  # names are `blocks.b.i...`, no `backbone.` prefix
    images = np.random.default_rng(3).uniform(-1, 1, (1, 48, 80, 3)).astype(np.float32)
    with torch.no_grad():
        expected = [t.permute(0, 2, 3, 1).numpy() for t in reference(torch.from_numpy(images).permute(0, 3, 1, 2))]
    got = [np.asarray(t) for t in lowered(images, training=False)]
    assert [g.shape for g in got] == [(1, 6, 10, 32), (1, 2, 3, 144)]
    for want, have in zip(expected, got):
        assert np.abs(have - want).max() <= TOLERANCE


def test_layer_names_trace_to_torch_module_names():
    model = build_detector(get_reference("mobiledet-edgetpu").arch, 64, num_classes=NUM_CLASSES)
    names = {layer.name for layer in model.layers}
    # block 4, layer 1 is `ir_k3_e8_c72`; block 1 the Tucker layer; the first extra; a predictor.
    assert {"backbone_blocks_4_1_expand_conv", "backbone_blocks_4_1_spatial_bn", "backbone_blocks_1_0_core_conv",
            "extras_0_depthwise_conv", "class_heads_5_pointwise", *OUTPUT_NAMES} <= names


def test_transfer_lists_unmatched_names_on_both_sides_and_copies_nothing():
    torch_arch = ArchSpec.parse("conv_k3_s2_c16/ir_k3_s2_e4_c16/ir_k3_s2_e4_c24/ir_k3_s2_e4_c32/ir_k3_s2_e4_c40")
    keras_arch = ArchSpec.parse("conv_k3_s2_c16/ir_k3_s2_e4_c16/tk_k3_s2_i0.25_o0.75_c24/"
                                "ir_k3_s2_e4_c32/ir_k3_s2_e4_c40")
    reference = SSDLite(torch_arch, num_classes=NUM_CLASSES)
    lowered = build_detector(keras_arch, 64, num_classes=NUM_CLASSES)
    before = [v.numpy().copy() for v in lowered.weights]
    with pytest.raises(WeightTransferError) as info:
        transfer_weights(reference, lowered)
    error = info.value
    assert "backbone.blocks.2.0.expand.conv.weight" in error.unmatched_torch
    assert "backbone_blocks_2_0_compress_conv/kernel" in error.unmatched_keras
    assert "backbone.blocks.2.0.expand.conv.weight" in str(error)
    assert "backbone_blocks_2_0_compress_conv/kernel" in str(error)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, lowered.weights))


def test_transfer_reports_extra_and_missing_tensors_and_shape_mismatches():
    arch = ArchSpec.parse("conv_k3_s2_c16/ir_k3_s2_e4_c16/ir_k3_s2_e4_c24/ir_k3_s2_e4_c32/ir_k3_s2_e4_c40")
    state = dict(SSDLite(arch, num_classes=NUM_CLASSES).state_dict())
    state["extras.9.reduce.conv.weight"] = torch.zeros(8, 8, 1, 1)
    del state["box_heads.0.pointwise.bias"]
    lowered = build_detector(arch, 64, num_classes=NUM_CLASSES + 1)  # one more class: class heads differ
    with pytest.raises(WeightTransferError) as info:
        transfer_weights(state, lowered)
    error = info.value
    assert error.unmatched_torch == ["extras.9.reduce.conv.weight"]
    assert error.unmatched_keras == ["box_heads_0_pointwise/bias"]
    assert len(error.mismatched_shapes) == 2 * SSDLiteHead().num_maps  # class pointwise weight + bias per map
    assert all(m.startswith("class_heads.") for m in error.mismatched_shapes)


def test_transfer_from_a_weights_file_loads_data_only(tmp_path):
    arch = ArchSpec.parse("conv_k3_s2_c16/ir_k3_s2_e4_c16/ir_k3_s2_e4_c24/ir_k3_s2_e4_c32/ir_k3_s2_e4_c40")
    reference = _randomise(SSDLite(arch, num_classes=NUM_CLASSES), seed=5)
    torch.save(reference.state_dict(), tmp_path / "model.pt")
    lowered = build_detector(arch, 64, num_classes=NUM_CLASSES)
    transfer_weights(tmp_path / "model.pt", lowered)
    bn = lowered.get_layer("extras_0_reduce_bn")
    assert np.allclose(bn.moving_variance.numpy(), reference.extras[0].reduce.bn.running_var.numpy())
    with pytest.raises(ValueError, match="torch module, a state dict or a weights path"):
        transfer_weights(42, lowered)


def test_bad_inputs_are_clear_value_errors():
    config = LayerConfig(parse_layer("ir_k3_e4_c16"), 16, (8, 8), residual=True)
    with pytest.raises(ValueError, match=r"takes \[N, H, W, 16\]"):
        apply_layer(keras.Input((8, 8, 24), batch_size=1), config, name="x")
    with pytest.raises(ValueError, match="placed at 8x8"):
        apply_layer(keras.Input((9, 8, 16), batch_size=1), config, name="x")
    assert tuple(apply_predictor(keras.Input((5, 7, 16), batch_size=1), 12, name="p").shape) == (1, 5, 7, 12)
    arch = get_reference("mobiledet-cpu").arch
    with pytest.raises(ValueError, match="no endpoint"):
        build_backbone(arch, 64, out_features=("C7",))
    with pytest.raises(ValueError, match="batch_size"):
        build_detector(arch, 64, num_classes=3, batch_size=0)
    with pytest.raises(ValueError, match="resolution"):
        build_detector(arch, (64, 64, 3), num_classes=3)
