"""Torch backbones: feature shapes, gradients to every parameter, agreement with cost counting."""

import pytest

torch = pytest.importorskip("torch")

from tdbnas.spaces import ARCHS, SPACES, backbone_cost, get_reference, get_space  # noqa: E402
from tdbnas.spaces.nn import Backbone, Conv2dSame, same_padding  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("name", ARCHS.names())
def test_every_reference_runs_forward_and_every_parameter_gets_a_gradient(name):
    arch = get_reference(name).arch
    model = Backbone(arch).train()
    x = torch.randn(2, 3, 64, 96)
    features = model(x)
    for info, feature in zip(model.feature_info, features):
        assert feature.shape == (2, info.channels, -(-64 // info.stride), -(-96 // info.stride))
    sum(f.square().mean() for f in features).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    assert sum(p.numel() for p in model.parameters()) == backbone_cost(arch).params


# C4 and C5 (H, W, C) on a 640x320 input; the CPU row is from the TF unit test
# (ssd_mobiledet_feature_extractor_tf1_test.py), the others follow from the reference widths.
SHAPES_640x320 = {
    "mobiledet-cpu": ((40, 20, 72), (20, 10, 144)),
    "mobiledet-edgetpu": ((40, 20, 96), (20, 10, 384)),
    "mobiledet-dsp": ((40, 20, 144), (20, 10, 240)),
    "mobiledet-gpu": ((40, 20, 128), (20, 10, 384)),
}


@pytest.mark.parametrize("name", SHAPES_640x320)
def test_feature_shapes_on_a_non_square_input(name):
    model = Backbone(get_reference(name).arch, out_features=("C4", "C5")).eval()
    with torch.no_grad():
        c4, c5 = model(torch.randn(1, 3, 640, 320))
    got = tuple((f.shape[2], f.shape[3], f.shape[1]) for f in (c4, c5))
    assert got == SHAPES_640x320[name]


@pytest.mark.parametrize("name", SPACES.names())
def test_random_members_of_every_space_build_and_match_counted_params(name):
    space = get_space(name)
    for seed in range(2):
        arch = space.sample(seed)
        model = Backbone(arch, out_features=("C4", "C5"))
        assert sum(p.numel() for p in model.parameters()) == backbone_cost(arch).params
        with torch.no_grad():
            c4, c5 = model.eval()(torch.randn(1, 3, 64, 64))
        assert (c4.shape[1], c5.shape[1]) == tuple(model.out_channels)


def test_only_layers_up_to_the_last_requested_endpoint_are_built():
    arch = get_reference("mobiledet-edgetpu").arch
    model = Backbone(arch, out_features=("C3",))
    assert sum(len(block) for block in model.blocks) == arch.feature("C3").layer_index + 1
    model(torch.randn(1, 3, 32, 32))[0].sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="no endpoint"):
        Backbone(arch, out_features=("C6",))


def test_width_multiplier_builds_the_traced_widths():
    arch = get_reference("mobiledet-dsp").arch
    model = Backbone(arch, width_multiplier=0.5, out_features=("C4", "C5"))
    assert model.out_channels == [72, 120]
    assert sum(p.numel() for p in model.parameters()) == backbone_cost(arch, width_multiplier=0.5).params


def test_same_padding_matches_tensorflow():
    # TF 'SAME': total = max((ceil(n/s) - 1) * s + k - n, 0), the odd pixel goes after.
    assert same_padding(320, 3, 2) == (0, 1)
    assert same_padding(320, 5, 2) == (1, 2)
    assert same_padding(321, 3, 2) == (1, 1)
    assert same_padding(7, 3, 1) == (1, 1)
    conv = Conv2dSame(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        x = torch.arange(16.0).reshape(1, 1, 4, 4)
        y = conv(x)
    # window of output (0, 0) covers rows/cols 0..2 with no padding before: sum of the 3x3 corner
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0, 0, 0].item() == x[0, 0, :3, :3].sum().item()
    # output (1, 1) covers rows/cols 2..4, row/col 4 being the zero pad after
    assert y[0, 0, 1, 1].item() == x[0, 0, 2:, 2:].sum().item()
