"""Layer tokens: canonical round trip, strict rejection, JSON form, templates, channel rounding."""

import re

import pytest

from tdbnas.spaces.channels import as_hw, round_channels, same_output_size
from tdbnas.spaces.layers import (
    IBN,
    Conv,
    DepthwiseSeparable,
    FusedIBN,
    LayerTemplate,
    ShuffleBlock,
    Skip,
    Tucker,
    XceptionBlock,
    layer_from_dict,
    parse_layer,
)

CANONICAL = {
    "conv_k3_s2_c32": Conv(kernel=3, stride=2, out=32),
    "conv_k3_s2_c16_hs": Conv(kernel=3, stride=2, out=16, act="hswish"),
    "conv_k1_c1280": Conv(kernel=1, out=1280),
    "ir_k5_s2_e8_c72": IBN(kernel=5, stride=2, expansion=8, out=72),
    "ir_k3_e4_c32_se0.25_hs": IBN(kernel=3, expansion=4, out=32, se=0.25, act="hswish"),
    "ds_k3_c16": DepthwiseSeparable(kernel=3, out=16),
    "er_k3_s2_e8_c16": FusedIBN(kernel=3, stride=2, expansion=8, out=16),
    "tk_k3_i0.25_o0.75_c16": Tucker(kernel=3, in_ratio=0.25, out_ratio=0.75, out=16),
    "tk_k3_s2_i1_o0.5_c64": Tucker(kernel=3, stride=2, in_ratio=1.0, out_ratio=0.5, out=64),
    "sh_k7_s2_c64": ShuffleBlock(kernel=7, stride=2, out=64),
    "sh_k3_c64_r6": ShuffleBlock(kernel=3, out=64, act="relu6"),
    "xc_k3_c160": XceptionBlock(kernel=3, out=160),
    "skip": Skip(),
}


@pytest.mark.parametrize("token, layer", CANONICAL.items())
def test_canonical_tokens_round_trip(token, layer):
    assert parse_layer(token) == layer
    assert layer.token() == token
    assert layer_from_dict(layer.to_dict()) == layer


@pytest.mark.parametrize("token, fragment", [
    ("ir_e4_k3_c16", "write 'ir_k3_e4_c16'"),  # option order
    ("ir_k3_s1_e4_c16", "write 'ir_k3_e4_c16'"),  # explicit default stride
    ("conv_k3_c32_r6", "write 'conv_k3_c32'"),  # explicit default activation
    ("tk_k3_i0.250_o0.75_c16", "write 'tk_k3_i0.25_o0.75_c16'"),
    ("iq_k3_e4_c16", "unknown layer kind 'iq'"),
    ("ir_k3_x4_c16", "malformed option 'x4'"),
    ("ir_k3_e4_c16_c24", "given twice"),
    ("conv_k3_e4_c16", "does not apply to Conv"),
    ("tk_k3_i0.25_c16_se0.25", "does not apply to Tucker"),
    ("ir_k3_c16", "lacks required option(s) e"),
    ("ir_k4_e4_c16", "kernel must be odd"),
    ("ir_k3_s3_e4_c16", "stride must be one of"),
    ("ir_k3_e4_c12", "write c16"),
    ("ir_k3_e1_c16", "'ds' kind"),
    ("ir_k3_e4.5_c16", "must be an integer"),
    ("tk_k3_i3_o0.5_c16", "in_ratio must be in"),
    ("ir_k3_e4_c16_se1.5", "squeeze-excite ratio"),
    ("sh_k1_c64", "kernel must be at least 3"),
    ("skip_k3", "does not apply to Skip"),
    ("", "empty layer token"),
])
def test_bad_tokens_are_rejected_with_a_reason(token, fragment):
    with pytest.raises(ValueError) as info:
        parse_layer(token)
    assert fragment in str(info.value)


def test_layer_json_is_strict():
    with pytest.raises(ValueError, match="unknown field"):
        layer_from_dict({"kind": "ir", "kernel": 3, "expansion": 4, "out": 16, "colour": "red"})
    with pytest.raises(ValueError, match="needs field"):
        layer_from_dict({"kind": "ir", "kernel": 3, "out": 16})
    with pytest.raises(ValueError, match="unknown layer kind"):
        layer_from_dict({"kind": "resnet"})
    with pytest.raises(ValueError, match="must be an integer"):
        layer_from_dict({"kind": "ir", "kernel": 3, "expansion": 4.0, "out": 16})


def test_templates_complete_width_and_stride():
    template = LayerTemplate.parse("tk_k3_i0.25_o0.75")
    assert template.build(out=16, stride=1) == parse_layer("tk_k3_i0.25_o0.75_c16")
    assert template.build(out=40, stride=2).token() == "tk_k3_s2_i0.25_o0.75_c40"
    assert template.matches(parse_layer("tk_k3_s2_i0.25_o0.75_c40"))
    assert not template.matches(parse_layer("tk_k3_i0.75_o0.75_c40"))
    assert LayerTemplate.parse("skip").build(out=16, stride=1) == Skip()
    for bad, fragment in [("ir_k3_e4_c16", "must not set 'c'"), ("ir_k3_s2_e4", "must not set 's'"),
                          ("ir_k3", "lacks option(s) e"), ("ir_e4_k3", "write 'ir_k3_e4'")]:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            LayerTemplate.parse(bad)


def test_inner_widths_follow_tf_rounding():
    # MobileDet-EdgeTPU layer 1: Tucker 32 -> 16 with ratios (0.25, 0.75): ranks 8 -> 16 (reference §2).
    assert parse_layer("tk_k3_i0.25_o0.75_c16").ranks(32) == (8, 16)
    # MobileDet-DSP layer 21: Tucker 160 -> 160 with (0.75, 0.75): 120 -> 120.
    assert parse_layer("tk_k3_i0.75_o0.75_c160").ranks(160) == (120, 120)
    # IBN expansion is in * e, unrounded (TF `int(h.shape[-1]) * expansion`).
    assert parse_layer("ir_k3_e8_c72").hidden(40) == 320


def test_round_channels_rounds_half_up_with_a_floor_of_eight():
    assert round_channels(20) == 24  # 2.5 eights -> 3 (Python's round() would give 2)
    assert round_channels(19) == 16
    assert round_channels(4) == 8  # SE of 16 channels at 0.25 (MobileDet-CPU layer 1: SE8)
    assert round_channels(832, 0.25) == 208  # MobileDet-CPU layer 19: SE208
    assert round_channels(3) == 8
    assert round_channels(72, 0.5) == 40  # 36 -> 4.5 eights -> 5


def test_resolution_helpers():
    assert as_hw(320) == (320, 320)
    assert as_hw((640, 320)) == (640, 320)
    assert same_output_size(5, 2) == 3 and same_output_size(320, 2) == 160
    for bad in (0, (1, 2, 3), "abc", True, (0, 4)):
        with pytest.raises(ValueError):
            as_hw(bad)
