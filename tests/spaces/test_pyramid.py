"""Feature pyramids in the architecture language: round trips, strict errors with positions, the
published NAS-FPN cell's bookkeeping, head resolution and anchors, costs, and the backbone +
pyramid search space (genomes <-> architectures one to one)."""

import json
import math
import random

import pytest

from tdbnas.spaces import (
    PYRAMIDS,
    ArchSpec,
    ArchStringError,
    BlockSpace,
    MergeCell,
    NotInSpaceError,
    PyramidChoices,
    PyramidSpec,
    SSDLiteHead,
    detector_cost,
    get_reference,
    get_space,
    pyramid_space,
    resolve_arch,
    resolve_pyramid,
)
from tdbnas.spaces.pyramid import level_hw
from tdbnas.spaces.pyramid_layout import pyramid_layout
from tdbnas.spaces.pyramid_space import PyramidSearchSpace, resolve_space, space_from_description

EDGETPU = get_reference("mobiledet-edgetpu").arch
NASFPN = "fpn_p3-7_c256_x7,p4_gp_1_3,p4_sum_1_5,p3_sum_0_6,p4_sum_6_7,p5_gp_7_8,p7_gp_6_9,p6_gp_9_10"


@pytest.mark.parametrize("name", PYRAMIDS.names())
def test_named_pyramids_round_trip_alone_and_on_a_backbone(name):
    spec = PYRAMIDS.get(name).spec
    assert PyramidSpec.parse(spec.encode()) == spec
    arch = resolve_arch(f"mobiledet-edgetpu+{name}")
    text = arch.encode()
    assert text == f"{EDGETPU.encode()}+{spec.encode()}"
    assert ArchSpec.parse(text) == arch and ArchSpec.parse(text).encode() == text
    assert ArchSpec.from_json(arch.to_json()) == arch
    assert arch.backbone_only() == EDGETPU and arch != EDGETPU and len({arch, ArchSpec.parse(text)}) == 1


def test_the_published_nasfpn_cell_and_its_bookkeeping():
    spec = resolve_pyramid("nasfpn")
    assert spec.encode() == NASFPN
    plan = spec.plan()
    # TF NASFPN_BLOCK_SPECS: 2 intermediate blocks, then the outputs at levels 3, 4, 5, 7, 6.
    assert [(c.level, c.op, c.inputs, c.is_output) for c in plan] == [
        (4, "gp", (1, 3), False), (4, "sum", (1, 5), False), (3, "sum", (0, 6), True), (4, "sum", (6, 7), True),
        (5, "gp", (7, 8), True), (7, "gp", (6, 9), True), (6, "gp", (9, 10), True)]
    # Output cells absorb unused maps of their level: P5's and P7's inputs, as mmdet's explicit
    # `gp_43_5 + sum_55_5` and `gp_54_7 + sum_77_7` say.
    assert [c.absorbed for c in plan] == [(), (), (), (), (2,), (4,), ()]
    # The coarser input gates (TF global_attention(node0, node1) with node0 the higher level).
    assert [c.gate for c in plan if c.op == "gp"] == [1, 1, 1, 1]
    assert [c.node for c in plan] == list(range(5, 12))


def test_gate_ties_go_to_the_first_input_and_sums_have_no_gate():
    spec = PyramidSpec(3, 4, 16, (MergeCell(3, "gp", (0, 1)), MergeCell(4, "gp", (1, 2)), MergeCell(3, "sum", (0, 3))))
    plan = spec.plan()
    assert plan[0].gate == 1  # P4 gates P3
    assert plan[1].gate == 0  # P4 (input 1) vs the P3 cell (node 2): the first is coarser
    assert plan[2].gate is None
    tie = PyramidSpec(3, 4, 16, (MergeCell(4, "sum", (0, 1)), MergeCell(4, "gp", (1, 2)), MergeCell(3, "sum", (0, 3)),
                                 MergeCell(4, "sum", (2, 4))))
    assert tie.plan()[1].gate == 0 and tie.plan()[1].input_levels == (4, 4)


@pytest.mark.parametrize("section, fragment, token_index", [
    ("fpn_p3-7_c64_dw_x3,p6_sum_3_4", "out of order", 0),
    ("fpn_p3-7_c64_x1,p6_sum_3_4", "'x1' is the default", 0),
    ("fpn_p3-7_c64_zz,p6_sum_3_4", "unknown option 'zz'", 0),
    ("fpn_p03-7_c64,p6_sum_3_4", "leading zero", 0),
    ("fpn_p7-3_c64,p6_sum_3_4", "min < max", 0),
    ("fpn_p3-7_c60,p6_sum_3_4", "write c64", 0),
    ("fpn_3-7,p6_sum_3_4", "expected fpn_p<min>-<max>_c<width>", 0),
])
def test_bad_headers_are_named(section, fragment, token_index):
    text = f"{EDGETPU.encode()}+{section}"
    with pytest.raises(ArchStringError) as info:
        ArchSpec.parse(text)
    assert fragment in str(info.value)
    assert info.value.position == len(EDGETPU.encode()) + 1
    assert info.value.token == section.split(",")[0]


FPN = "fpn_p3-7_c64,p6_sum_3_4,p7_sum_4_5,p5_sum_2_5,p4_sum_1_7,p3_sum_0_8"


@pytest.mark.parametrize("cells, bad, fragment", [
    ("p6_sum_4_3,p7_sum_4_5,p5_sum_2_5,p4_sum_1_7,p3_sum_0_8", "p6_sum_4_3", "write 'p6_sum_3_4'"),
    ("p6_sum_3_4,p7_sum_4_5,p5_sum_2_5,p4_sum_1_7,p3_sum_0_10", "p3_sum_0_10", "does not exist yet"),
    ("p6_sum_3_4,p7_max_4_5,p5_sum_2_5,p4_sum_1_7,p3_sum_0_8", "p7_max_4_5", "unknown binary op 'max'"),
    ("p6_sum_3_4,p7_sum_4_4,p5_sum_2_5,p4_sum_1_7,p3_sum_0_8", "p7_sum_4_4", "two different maps"),
    ("p6_sum_3_4,p7_sum_4_5,p5_sum_2_5,p4_sum_1_7,p4_sum_0_8", "p6_sum_3_4", "one cell per level"),
    ("p6_sum_3_4,p9_sum_4_5,p5_sum_2_5,p4_sum_1_7,p3_sum_0_8", "p9_sum_4_5", "outside the pyramid"),
    ("p6_sum_3_4,p7_sum_4_5,p5_sum_2_5,p4_sum_1_7", "fpn_p3-7_c64", "at least 5 cells"),
    ("p6_sum_3_4,p07_sum_4_5,p5_sum_2_5,p4_sum_1_7,p3_sum_0_8", "p07_sum_4_5", "leading zero"),
])
def test_bad_cells_are_named_with_their_position(cells, bad, fragment):
    text = f"{EDGETPU.encode()}+fpn_p3-7_c64,{cells}"
    with pytest.raises(ArchStringError) as info:
        ArchSpec.parse(text)
    assert fragment in str(info.value)
    assert info.value.token == bad
    assert text[info.value.position:].startswith(bad)


@pytest.mark.parametrize("text, fragment", [
    (f"{EDGETPU.encode()}+", "empty pyramid section"),
    (f"{EDGETPU.encode()}+{FPN}+{FPN}", r"a second '\+'"),
    (f"{EDGETPU.encode()}+{FPN},", "empty token"),
    # a backbone without C3 (its second block already strides to 8) cannot feed a P3 pyramid
    ("conv_k3_s2_c16/ir_k3_s2_e4_c16,ir_k3_e4_c16/ir_k3_s2_e4_c24/ir_k3_s2_e4_c32/ir_k3_s2_e4_c40+"
     "fpn_p7-8_c64,p7_sum_0_1,p8_sum_1_2", "needs backbone endpoint C7"),
])
def test_structural_errors(text, fragment):
    with pytest.raises(ArchStringError, match=fragment):
        ArchSpec.parse(text)


def test_strings_without_a_pyramid_are_unchanged():
    assert "+" not in EDGETPU.encode() and EDGETPU.pyramid is None
    assert "pyramid" not in EDGETPU.to_json_dict()
    assert ArchSpec.parse(EDGETPU.encode()) == EDGETPU


def test_resolve_names_and_their_errors(tmp_path):
    assert resolve_arch("mobiledet-edgetpu+fpn-lite").pyramid == PYRAMIDS.get("fpn-lite").spec
    assert resolve_arch(f"mobiledet-edgetpu+{FPN}").pyramid == PyramidSpec.parse(FPN)
    with pytest.raises(ValueError, match="did you mean nasfpn-lite"):
        resolve_arch("mobiledet-edgetpu+nasfpnlite")
    path = tmp_path / "arch.json"
    path.write_text(resolve_arch("mobiledet-edgetpu+fpn").to_json())
    assert resolve_arch(str(path)) == resolve_arch("mobiledet-edgetpu+fpn")
    with pytest.raises(ValueError, match="already has a pyramid"):
        resolve_arch(f"{path}+fpn")


def test_json_form_keeps_the_pyramid_and_checks_it():
    arch = resolve_arch("mobiledet-edgetpu+nasfpn-lite")
    doc = json.loads(arch.to_json())
    assert doc["pyramid"] == arch.pyramid.encode()
    with pytest.raises(ValueError, match="disagrees"):
        ArchSpec.from_json({**doc, "pyramid": FPN})


def test_head_resolves_to_the_pyramid_levels_and_anchors_match():
    arch = resolve_arch("mobiledet-edgetpu+fpn")
    head = SSDLiteHead(num_classes=3).resolve(arch)
    assert head.from_features == ("P3", "P4", "P5", "P6", "P7") and head.extra_depths == ()
    assert head.resolve(arch) == head and SSDLiteHead().resolve(EDGETPU) == SSDLiteHead()
    # 640x320 (H x W): P3..P7 are ceil(H / 2**k) x ceil(W / 2**k); every map is 64 wide.
    maps = SSDLiteHead().feature_maps(arch, (640, 320))
    assert [(m.name, m.hw, m.channels, m.stride) for m in maps] == [
        ("P3", (80, 40), 64, 8), ("P4", (40, 20), 64, 16), ("P5", (20, 10), 64, 32), ("P6", (10, 5), 64, 64),
        ("P7", (5, 3), 64, 128)]
    # 320x320: 40*40*3 (reduced lowest map) + (20*20 + 10*10 + 5*5 + 3*3) * 6 = 4800 + 3204
    assert SSDLiteHead().num_anchors(arch, 320) == 8004
    subset = SSDLiteHead(from_features=("P4", "P5"), extra_depths=(128,))
    assert [m.name for m in subset.feature_maps(arch, 320)] == ["P4", "P5", "extra1"]
    with pytest.raises(ValueError, match="pyramid levels only"):
        SSDLiteHead(from_features=("C4", "P5")).resolve(arch)
    with pytest.raises(ValueError, match="no pyramid"):
        SSDLiteHead(from_features=("P3",)).resolve(EDGETPU)
    with pytest.raises(ValueError, match="no level"):
        SSDLiteHead(from_features=("P2",)).resolve(arch)


def test_layout_parts_and_keys_of_the_fpn():
    layout = pyramid_layout(resolve_arch("mobiledet-edgetpu+fpn"), 320)
    keys = [part.key for part in layout.parts()]
    # laterals C3 (40 ch), C4 (96), C5 (384) -> 64; P6, P7 by max-pool; then per cell its resampling
    assert keys == [
        "fpn_lateral@40x40:40>64", "fpn_lateral@20x20:96>64", "fpn_lateral@10x10:384>64",
        "fpn_down_1@10x10:64", "fpn_down_1@5x5:64",
        "fpn_upsample@3x3>5x5:64", "fpn_cell_sum@5x5:64",      # P6 <- P6 + up(P7)
        "fpn_down_1@5x5:64", "fpn_cell_sum@3x3:64",      # P7 <- P7 + down(P6')
        "fpn_upsample@5x5>10x10:64", "fpn_cell_sum@10x10:64",  # top-down from here
        "fpn_upsample@10x10>20x20:64", "fpn_cell_sum@20x20:64",
        "fpn_upsample@20x20>40x40:64", "fpn_cell_sum@40x40:64"]
    assert level_hw((641, 320), 7) == (6, 3)


def test_costs_count_the_pyramid():
    plain = detector_cost(EDGETPU, 320, num_classes=3)
    fpn = detector_cost(resolve_arch("mobiledet-edgetpu+fpn"), 320, num_classes=3)
    lite = detector_cost(resolve_arch("mobiledet-edgetpu+fpn-lite"), 320, num_classes=3)
    assert plain.pyramid.params == 0 and fpn.backbone == plain.backbone
    # laterals: (40 + 96 + 384) * 64 + 3 * 2 * 64 BN; 5 cells of 3x3 convs: 5 * (9 * 64 * 64 + 2 * 64)
    assert fpn.pyramid.params == (40 + 96 + 384) * 64 + 3 * 128 + 5 * (9 * 64 * 64 + 128)
    # separable: 3x3 depthwise (no BN) + 1x1 + BN per cell
    assert lite.pyramid.params == (40 + 96 + 384) * 64 + 3 * 128 + 5 * (9 * 64 + 64 * 64 + 128)
    assert fpn.total.params == fpn.backbone.params + fpn.pyramid.params + fpn.head.params


# ---- the backbone + pyramid search space ---------------------------------------------------------
@pytest.fixture(scope="module")
def space():
    return pyramid_space(get_space("tdb-lite"))


def test_genomes_and_architectures_correspond_one_to_one(space):
    rng = random.Random(0)
    backbone_slots = len(get_space("tdb-lite").slots)
    assert space.slots[:backbone_slots] == get_space("tdb-lite").slots
    assert space.size() == math.prod(len(slot) for slot in space.slots)
    for _ in range(200):
        genome = space.random_genome(rng)
        arch = space.decode(genome)
        assert arch.pyramid is not None and len(arch.pyramid.cells) == 7
        assert space.encode(arch) == genome and space.contains(arch)
        assert ArchSpec.parse(arch.encode()) == arch
        mutant = space.mutate(arch, rng, prob=0.3)
        child = space.crossover(arch, mutant, rng)
        assert space.contains(mutant) and space.contains(child)


def test_every_pyramid_choice_is_reachable(space):
    slots = {slot.name: slot for slot in space.slots}
    assert slots["pyramid.c1.inputs"].choices[:3] == ("0_1", "0_2", "0_3")
    assert len(slots["pyramid.c2.inputs"]) == math.comb(6, 2) and len(slots["pyramid.o5.inputs"]) == math.comb(11, 2)
    assert len(slots["pyramid.outputs"]) == math.factorial(5)
    assert slots["pyramid.c1.level"].choices == ("P3", "P4", "P5", "P6", "P7")


def test_members_outside_the_space_say_why(space):
    with pytest.raises(NotInSpaceError, match="has a feature pyramid"):
        space.encode(get_space("tdb-lite").sample(0))
    nasfpn = get_space("tdb-lite").sample(0).with_pyramid(resolve_pyramid("nasfpn-lite"))
    with pytest.raises(NotInSpaceError, match="has pyramids 'fpn_p3-7_c64_dw'"):
        space.encode(nasfpn)
    # the NAS-FPN cell at the space's frame (stack 1, width 64, separable) is a member
    published = nasfpn.with_pyramid(PyramidSpec(3, 7, 64, resolve_pyramid("nasfpn").cells, separable=True))
    assert space.decode(space.encode(published)) == published
    restricted = pyramid_space(get_space("tdb-lite"), PyramidChoices(ops=("sum",), cell_levels=(4, 5)))
    with pytest.raises(NotInSpaceError, match="level P3 is not one of"):
        restricted.encode(published.with_pyramid(PyramidSpec(3, 7, 64, (MergeCell(3, "sum", (0, 1)),
                                                                        *published.pyramid.cells[1:]),
                                                             separable=True)))
    with pytest.raises(NotInSpaceError, match="op 'gp' is not one of"):
        restricted.encode(published)
    with pytest.raises(NotInSpaceError, match="no feature pyramid"):
        get_space("tdb-lite").encode(published)


def test_descriptions_round_trip_and_load_by_name(space, tmp_path):
    again = space_from_description(json.loads(json.dumps(space.to_description())))
    assert isinstance(again, PyramidSearchSpace) and again.slots == space.slots
    assert isinstance(space_from_description(get_space("tdb").to_description()), BlockSpace)
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"name": "p", "backbone": "tdb-lite", "pyramid": {"levels": [3, 6], "width": 32,
                                                                                 "intermediate": 1}}))
    loaded = resolve_space(str(path))
    assert loaded.reference.pyramid.header() == "fpn_p3-6_c32_dw" and len(loaded.reference.pyramid.cells) == 5
    assert resolve_space("tdb-lite+pyramid").slots == space.slots
    with pytest.raises(ValueError, match="unknown key"):
        space_from_description({"name": "p", "backbone": "tdb-lite", "pyramid": {"depth": 3}})
    with pytest.raises(ValueError, match="NAME\\+pyramid"):
        resolve_space("tdb-lite+fpn")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"cell_levels": (9,)}, "cell_levels must be distinct levels within P3-P7"),
    ({"width": 12}, "write c16"),
    ({"ops": ("max",)}, "ops must be distinct choices"),
    ({"min_level": 5, "max_level": 3}, "min < max"),
    ({"intermediate": -1}, "non-negative"),
    ({"extra": "stride"}, "extra must be one of"),
])
def test_bad_pyramid_frames_are_explained(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        PyramidChoices(**kwargs)
