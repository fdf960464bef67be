"""Architecture strings: exact round trip, strict errors with positions, JSON, derived structure."""

import json

import pytest

from tdbnas.spaces import ARCHS, ArchSpec, ArchStringError, get_reference

EDGETPU = get_reference("mobiledet-edgetpu").arch


@pytest.mark.parametrize("name", ARCHS.names())
def test_every_reference_round_trips_through_string_and_json(name):
    arch = get_reference(name).arch
    text = arch.encode()
    assert ArchSpec.parse(text) == arch
    assert ArchSpec.parse(text).encode() == text
    assert ArchSpec.from_json(arch.to_json()) == arch
    assert ArchSpec.from_json(json.loads(arch.to_json(indent=2))) == arch


@pytest.mark.parametrize("text, token, position, fragment", [
    # unknown kind: the message names the token, its block/layer and its character position
    ("conv_k3_s2_c32/ir_k3_e4_c16,iq_k3_c8", "iq_k3_c8", 28, "block 1, layer 2, character 28"),
    ("conv_k3_s2_c32/ir_k3_e4_c16,,ir_k3_e4_c16", "", 28, "empty token"),
    ("conv_k3_s2_c32/", "", 15, "empty token"),
    ("conv_k3_s2_c32/ir_e4_k3_c16", "ir_e4_k3_c16", 15, "write 'ir_k3_e4_c16'"),
    # structural: stride on a non-first layer, skip first, channel split mismatch
    ("conv_k3_s2_c32/ir_k3_e4_c16,ir_k3_s2_e4_c16", "ir_k3_s2_e4_c16", 28, "only the first layer of a block"),
    ("skip/conv_k3_s2_c32", "skip", 0, "first layer cannot be skip"),
    ("conv_k3_s2_c32/sh_k3_c64", "sh_k3_c64", 15, "needs in == out"),
    ("conv_k3_s2_c32/sh_k3_s2_c32", "sh_k3_s2_c32", 15, "needs more output channels"),
])
def test_malformed_strings_name_the_token_and_where_it_is(text, token, position, fragment):
    with pytest.raises(ArchStringError) as info:
        ArchSpec.parse(text)
    assert fragment in str(info.value)
    assert info.value.token == token
    assert info.value.position == position


@pytest.mark.parametrize("text", ["", " conv_k3_s2_c32", "conv_k3_s2_c32 /ds_k3_c16", "conv_k3_s2_c32\n"])
def test_empty_and_whitespace_are_rejected(text):
    with pytest.raises(ArchStringError):
        ArchSpec.parse(text)


def test_parse_rejects_non_strings():
    with pytest.raises(ArchStringError, match="must be a str"):
        ArchSpec.parse(None)  # type: ignore[arg-type]


def test_json_form_is_strict():
    doc = EDGETPU.to_json_dict()
    with pytest.raises(ValueError, match="disagrees"):
        ArchSpec.from_json({**doc, "arch": get_reference("mobiledet-dsp").arch.encode()})
    with pytest.raises(ValueError, match="unknown key"):
        ArchSpec.from_json({**doc, "extra": 1})
    with pytest.raises(ValueError, match="not a tdbnas.arch"):
        ArchSpec.from_json({**doc, "version": 99})
    with pytest.raises(ValueError, match="not valid JSON"):
        ArchSpec.from_json("{")
    bad = json.loads(json.dumps(doc))
    bad["blocks"][2][1]["kind"] = "zz"
    with pytest.raises(ValueError, match=r"blocks\[2\]\[1\]: unknown layer kind"):
        ArchSpec.from_json(bad)
    # the string alone is a valid JSON form too
    assert ArchSpec.from_json({"format": "tdbnas.arch", "version": 1, "arch": EDGETPU.encode()}) == EDGETPU


def test_residuals_are_derived_like_the_tf_implementation():
    cpu = get_reference("mobiledet-cpu").arch.trace(320)
    # MobileDet-CPU #7-9 (block 3, stride 1, 32 -> 32): residual
    assert [c.residual for c in cpu[7:10]] == [True, True, True]
    # #14 is the first layer of block 5: 72 -> 72 at stride 1, but TF passes residual=False (reference §2)
    assert cpu[14].in_channels == cpu[14].out_channels == 72 and cpu[14].stride == 1
    assert not cpu[14].residual
    # the stem, stride-2 layers and width changes never have one
    edgetpu = EDGETPU.trace(320)
    assert not any(c.residual for c in edgetpu if c.stride == 2 or c.in_channels != c.out_channels)
    # GPU #14: first layer of block 5, 128 -> 128: no residual either
    gpu = get_reference("mobiledet-gpu").arch.trace(320)
    assert gpu[14].in_channels == gpu[14].out_channels == 128 and not gpu[14].residual


def test_endpoints_are_published_without_a_forward_pass():
    features = {f.name: f for f in get_reference("mobiledet-cpu").arch.features()}
    assert [(f.channels, f.stride) for f in (features["C4"], features["C5"])] == [(72, 16), (144, 32)]
    assert features["C1"].layer_index == 1 and features["C5"].layer_index == 22
    with pytest.raises(ValueError, match="no endpoint C6"):
        EDGETPU.feature("C6")


def test_width_multiplier_rounds_like_tf():
    trace = EDGETPU.trace(320, width_multiplier=0.5)
    assert trace[0].out_channels == 16  # 32 * 0.5
    assert trace[6].out_channels == 24  # 40 * 0.5 = 20 -> rounds half up to 24
    assert EDGETPU.feature("C5", 0.5).channels == 192


def test_trace_sizes_use_same_padding():
    trace = EDGETPU.trace((641, 320))
    assert trace[0].out_hw == (321, 160)
    assert trace[-1].out_hw == (21, 10)


def test_specs_are_hashable_and_frozen():
    assert len({EDGETPU, ArchSpec.parse(EDGETPU.encode())}) == 1
    with pytest.raises(AttributeError):
        EDGETPU.blocks = ()  # type: ignore[misc]
