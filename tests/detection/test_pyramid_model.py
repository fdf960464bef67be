"""The torch detector with a feature pyramid: output layout on non-square inputs, parameter counts
against the spec's cost counting, gradients everywhere, and the resampling / merging semantics the
Keras lowering must reproduce (hand-computed)."""

import pytest
import torch

from tdbnas.detection.model import SSDLite, count_parameters
from tdbnas.spaces import SSDLiteHead, detector_cost, get_space, pyramid_space, resolve_arch
from tdbnas.spaces.nn.pyramid import downsample, merge, upsample

pytestmark = pytest.mark.torch

SEARCHED = ("mobiledet-edgetpu+fpn_p3-7_c64_sc_dw,p5_gp_0_4,p4_sum_1_5,p3_gp_0_6,p6_sum_3_7,p7_gp_4_8,p5_sum_5_9,"
            "p4_sum_6_10")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("text", ["mobiledet-edgetpu+fpn", "mobiledet-cpu+nasfpn-lite", SEARCHED])
def test_outputs_parameters_and_gradients(text):
    arch = resolve_arch(text)
    model = SSDLite(arch, num_classes=4)
    # 160x128: P3..P7 are 20x16, 10x8, 5x4, 3x2, 2x1 -> 320 * 3 + (80 + 20 + 6 + 2) * 6 = 1608 anchors.
    # (No 1x1 map: a train-mode BN after a 1x1 map cancels any constant shift, so the BN before it
    # would rightly get no gradient.)
    box, cls = model(torch.randn(2, 3, 160, 128))
    assert box.shape == (2, 1608, 4) and cls.shape == (2, 1608, 5)
    assert model.anchors((160, 128)).shape == (1608, 4)
    cost = detector_cost(arch, (160, 128), num_classes=4)
    assert count_parameters(model) == cost.backbone.params + cost.pyramid.params + cost.head.params
    (box.square().mean() + cls.mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_module_names_trace_to_the_pyramid_spec():
    model = SSDLite(resolve_arch(SEARCHED), num_classes=2)
    names = set(model.state_dict())
    # laterals C3/C4/C5 -> 64; extra levels by strided separable convs; one conv per cell
    assert {"pyramid.lateral.2.conv.weight", "pyramid.extra.1.depthwise.weight", "pyramid.extra.1.pointwise.bn.bias",
            "pyramid.cells.0.6.pointwise.conv.weight", "box_heads.4.pointwise.bias"} <= names
    assert not any(name.startswith("extras.") for name in names)  # the pyramid replaces SSDLite's extras
    assert model.head_spec.from_features == ("P3", "P4", "P5", "P6", "P7")


def test_a_head_on_chosen_levels_with_extra_layers():
    arch = resolve_arch("mobiledet-edgetpu+fpn-lite")
    head = SSDLiteHead(num_classes=3, from_features=("P4", "P5"), extra_depths=(128,))
    model = SSDLite(arch, num_classes=3, head=head).eval()
    with torch.no_grad():
        box, _ = model(torch.randn(1, 3, 64, 64))
    # P4 4x4 (3 anchors), P5 2x2 (6), extra 1x1 (6)
    assert box.shape[1] == 16 * 3 + 4 * 6 + 6 == model.anchors(64).shape[0]


def test_downsampling_is_same_padded_max_pooling():
    x = torch.arange(15.0).reshape(1, 1, 3, 5)
    # ceil(3/2) x ceil(5/2): the last row and column are pooled alone (TF 'SAME' pads with -inf)
    assert downsample(x, 1).tolist() == [[[[6.0, 8.0, 9.0], [11.0, 13.0, 14.0]]]]
    assert downsample(x, 2).tolist() == [[[[13.0, 14.0]]]]
    assert downsample(torch.ones(1, 1, 1, 1), 3).shape == (1, 1, 1, 1)


def test_upsampling_is_nearest_with_half_pixel_centres():
    x = torch.arange(3.0).reshape(1, 1, 1, 3)
    # source column = floor((dst + 0.5) * 3 / 5): 0, 0, 1, 2, 2 (TF half_pixel_centers=True)
    assert upsample(x, (1, 5)).flatten().tolist() == [0.0, 0.0, 1.0, 2.0, 2.0]
    assert upsample(x, (2, 6)).flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0] * 2


def test_binary_ops():
    a = torch.tensor([[[[1.0, -2.0]]], [[[0.0, 3.0]]]]).reshape(1, 2, 1, 2)
    b = torch.full((1, 2, 1, 2), 2.0)
    assert torch.equal(merge("sum", a, b, None), a + b)
    # gp: g + o * sigmoid(max over H, W of g), per channel; the gate is the input `gate` names
    gated = merge("gp", a, b, 0)
    expected = a + b * torch.sigmoid(torch.tensor([1.0, 3.0])).reshape(1, 2, 1, 1)
    assert torch.allclose(gated, expected)
    assert torch.allclose(merge("gp", b, a, 1), expected)


def test_members_of_a_pyramid_space_build_and_train():
    space = pyramid_space(get_space("tdb-lite"))
    for seed in range(2):
        model = SSDLite(space.sample(seed), num_classes=2)
        box, cls = model(torch.randn(2, 3, 64, 96))  # train mode: BN needs 2 values on the 1x1 P7
        assert box.shape[1] == cls.shape[1] == model.anchors((64, 96)).shape[0]
        cls.mean().backward()
