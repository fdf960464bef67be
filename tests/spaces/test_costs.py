"""Cost counting from the spec: published totals, hand-computed layers, head shapes and anchors."""

import pytest

from tdbnas.spaces import SSDLiteHead, detector_cost, get_reference, layer_cost
from tdbnas.spaces.arch import LayerConfig
from tdbnas.spaces.layers import parse_layer

# Published totals of the MobileDet config headers at 320x320 with the 90-class COCO head
# (reference §3.1). Convention: conv multiply-adds; weights + biases + BN scale/offset.
PUBLISHED = {
    "mobiledet-cpu": (0.45e9, 4.21e6),
    "mobiledet-edgetpu": (1.53e9, 4.20e6),
    "mobiledet-dsp": (2.82e9, 7.16e6),
    "mobiledet-gpu": (5.07e9, 13.11e6),
    "mobilenetv2": (0.8e9, 4.3e6),  # MobileNetV2 paper, SSDLite row (MAdds only checked below)
}


@pytest.mark.parametrize("name", [n for n in PUBLISHED if n.startswith("mobiledet")])
def test_mobiledet_costs_match_published_totals_within_3_percent(name):
    madds, params = PUBLISHED[name]
    cost = detector_cost(get_reference(name).arch, 320, num_classes=90).total
    assert cost.madds == pytest.approx(madds, rel=0.03)
    assert cost.params == pytest.approx(params, rel=0.03)


def test_mobilenetv2_ssdlite_madds_match_the_paper():
    cost = detector_cost(get_reference("mobilenetv2").arch, 320, num_classes=90).total
    assert cost.madds == pytest.approx(0.8e9, rel=0.03)


def test_ibn_cost_by_hand():
    # ir_k3_e4_c16 on an 8x8x16 input: expand 16->64, depthwise 3x3 on 64, project 64->16.
    config = LayerConfig(parse_layer("ir_k3_e4_c16"), 16, (8, 8), residual=True)
    cost = layer_cost(config)
    assert cost.madds == 8 * 8 * 16 * 64 + 8 * 8 * 9 * 64 + 8 * 8 * 64 * 16  # 167,936
    # weights + BN (2 per channel) for each of the three convs
    assert cost.params == (16 * 64 + 2 * 64) + (9 * 64 + 2 * 64) + (64 * 16 + 2 * 16)  # 2,912


def test_squeeze_excite_and_stride_by_hand():
    # ir_k3_s2_e4_c16 with SE 0.25 on 16x16x8: hidden 32, SE width round8(8) = 8, output 8x8.
    config = LayerConfig(parse_layer("ir_k3_s2_e4_c16_se0.25_hs"), 8, (16, 16), residual=False)
    expand, depthwise, project = 16 * 16 * 8 * 32, 8 * 8 * 9 * 32, 8 * 8 * 32 * 16
    se = 32 * 8 + 8 * 32  # two 1x1 convs on the pooled vector
    assert layer_cost(config).madds == expand + depthwise + project + se
    se_params = (32 * 8 + 8) + (8 * 32 + 32)  # weights + biases, no BN
    bn = 2 * (32 + 32 + 16)
    assert layer_cost(config).params == 8 * 32 + 9 * 32 + 32 * 16 + bn + se_params


def test_tucker_and_fused_by_hand():
    tucker = LayerConfig(parse_layer("tk_k3_i0.25_o0.75_c16"), 32, (10, 10), residual=False)
    # 1x1 32->8, 3x3 8->16, 1x1 16->16 (ranks round8(32*0.25)=8, round8(16*0.75)=16)
    assert layer_cost(tucker).madds == 100 * (32 * 8 + 9 * 8 * 16 + 16 * 16)
    fused = LayerConfig(parse_layer("er_k5_s2_e8_c40"), 16, (10, 10), residual=False)
    assert layer_cost(fused).madds == 25 * (25 * 16 * 128) + 25 * (128 * 40)


def test_head_feature_maps_on_640x320_match_the_tf_unit_test():
    # ssd_mobiledet_feature_extractor_tf1_test.py: MobileDet-CPU on a 640x320 input.
    maps = SSDLiteHead().feature_maps(get_reference("mobiledet-cpu").arch, (640, 320))
    assert [(*m.hw, m.channels) for m in maps] == [
        (40, 20, 72), (20, 10, 144), (10, 5, 512), (5, 3, 256), (3, 2, 256), (2, 1, 128)]


def test_anchor_counts():
    head, arch = SSDLiteHead(), get_reference("mobiledet-edgetpu").arch
    assert head.anchors_per_location() == (3, 6, 6, 6, 6, 6)
    # 320: maps 20, 10, 5, 3, 2, 1 -> 20^2*3 + (10^2 + 5^2 + 3^2 + 2^2 + 1^2)*6 = 1200 + 834
    assert head.num_anchors(arch, 320) == 2034
    # 160: maps 10, 5, 3, 2, 1, 1 -> 10^2*3 + (25 + 9 + 4 + 1 + 1)*6 = 300 + 240
    assert head.num_anchors(arch, 160) == 540


def test_head_cost_depends_on_class_count_and_validates_it():
    arch = get_reference("mobiledet-edgetpu").arch
    small, large = detector_cost(arch, 320, 6), detector_cost(arch, 320, 90)
    assert small.backbone == large.backbone and small.head.params < large.head.params
    # the class predictor 1x1s grow by (90 - 6) slots per anchor on every map
    per_map = [m.channels for m in SSDLiteHead().feature_maps(arch, 320)]
    extra_weights = sum(c * a * 84 for c, a in zip(per_map, (3, 6, 6, 6, 6, 6)))
    extra_biases = 84 * sum((3, 6, 6, 6, 6, 6))
    assert large.head.params - small.head.params == extra_weights + extra_biases
    with pytest.raises(ValueError, match="num_classes"):
        detector_cost(arch, 320, 6, head=SSDLiteHead(num_classes=90))
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        SSDLiteHead(num_classes=0)
