"""Plain categorical spaces: named slots and choices with numeric attributes, their description
files and one-line errors, the genome operators, and the built-in FBNet space's geometry."""

import json

import pytest

from tdbnas.spaces import CATEGORICAL_SPACES, CategoricalSpace, GenomeSpace, fbnet, resolve_genome_space

DESCRIPTION = {"name": "toy", "description": "three layers", "slots": [
    {"name": "l1", "choices": ["a", "b", "skip"], "attributes": {"a": {"conv.madds": 10, "conv.count": 1},
                                                                 "b": {"conv.madds": 30, "conv.count": 2}}},
    {"name": "l2", "choices": ["a", "b"]},
    {"name": "l3", "choices": ["a", "b", "skip"], "attributes": {"b": {"conv.madds": 5.5}}}]}


def test_a_description_round_trips_and_missing_attributes_are_zero():
    space = CategoricalSpace.from_description(DESCRIPTION)
    assert isinstance(space, GenomeSpace) and space.size() == 3 * 2 * 3
    assert [s.name for s in space.slots] == ["l1", "l2", "l3"] and space.slots[0].choices == ("a", "b", "skip")
    assert space.attribute_names == ("conv.count", "conv.madds")
    assert space.attribute(0, 1, "conv.madds") == 30 and space.attribute(0, 2, "conv.madds") == 0
    assert space.attribute(2, 1, "conv.madds") == 5.5 and space.attribute(1, 0, "conv.count") == 0
    again = CategoricalSpace.from_description(space.to_description())
    assert again.to_description() == space.to_description()


def test_members_as_names_and_genome_operators():
    space = CategoricalSpace.from_description(DESCRIPTION)
    assert space.genome_of(["b", "a", "skip"]) == (1, 0, 2) and space.names_of((1, 0, 2)) == ("b", "a", "skip")
    with pytest.raises(ValueError, match="slot 'l2' of space 'toy' has no choice 'skip'"):
        space.genome_of(["a", "skip", "a"])
    with pytest.raises(ValueError, match="2 choice names for the 3 slots"):
        space.genome_of(["a", "b"])
    genome = space.random_genome(0)
    assert space.check_genome(genome) == genome
    mutant = space.mutate_genome(genome, 1, prob=1.0)
    assert all(m != g for m, g in zip(mutant, genome))  # prob 1: every gene moves
    child = space.crossover_genomes((0, 0, 0), (1, 1, 1), 2)
    assert all(c in (0, 1) for c in child)


@pytest.mark.parametrize("edit, message", [
    (lambda d: {**d, "extra": 1}, r"unknown key\(s\) \['extra'\]"),
    (lambda d: {"name": "x", "slots": {}}, "'slots' must be a list"),
    (lambda d: {**d, "slots": [{"name": "l1", "choices": ["a", "a"]}]}, "duplicate choices"),
    (lambda d: {**d, "slots": [{"name": "l1", "choices": []}]}, "has no choices"),
    (lambda d: {**d, "slots": [{"name": "l1", "choices": ["a"], "attributes": {"z": {"m": 1}}}]},
     r"attributes for unknown choice\(s\) \['z'\]"),
    (lambda d: {**d, "slots": [{"name": "l1", "choices": ["a"], "attributes": {"a": {"m": "many"}}}]},
     "attribute 'm' must be a finite number"),
    (lambda d: {**d, "slots": [{"name": "l1", "choices": ["a"]}, {"name": "l1", "choices": ["b"]}]},
     "duplicate slot names"),
])
def test_bad_descriptions_name_the_problem_in_one_line(tmp_path, edit, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(edit(DESCRIPTION)))
    with pytest.raises(ValueError, match=message) as info:
        resolve_genome_space(str(path))
    assert "\n" not in str(info.value)


def test_resolution_of_builtin_files_and_arch_language_spaces(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(json.dumps(DESCRIPTION))  # JSON is YAML
    assert resolve_genome_space(str(path)).name == "toy"
    assert resolve_genome_space("fbnet") is CATEGORICAL_SPACES.get("fbnet")
    assert resolve_genome_space("tdb-lite").name == "tdb-lite"  # architecture-language spaces still resolve
    with pytest.raises(ValueError, match="built-in categorical spaces: fbnet"):
        resolve_genome_space("nope")


def test_fbnet_geometry_and_attributes_by_hand():
    space = CATEGORICAL_SPACES.get("fbnet")
    assert len(space.slots) == 22 and all(len(s) == 9 for s in space.slots)
    assert space.slots[0].choices == ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6",
                                      "skip")
    geometry = fbnet.layer_geometry()
    assert geometry[0] == (16, 16, 1, 32) and geometry[1] == (16, 24, 1, 32) and geometry[5] == (24, 32, 2, 32)
    assert geometry[-1] == (184, 352, 1, 4)
    # Layer 6 (24 -> 32, stride 2 at 32x32), k5_e6: 1x1 24->144 at 32x32, 5x5 depthwise at 16x16,
    # 1x1 144->32 at 16x16.
    k5_e6 = space.slots[5].choices.index("k5_e6")
    assert space.attribute(5, k5_e6, "conv1x1.madds") == 32 * 32 * 24 * 144 + 16 * 16 * 144 * 32
    assert space.attribute(5, k5_e6, "dwconv5x5.madds") == 16 * 16 * 144 * 25
    assert space.attribute(5, k5_e6, "add.count") == 0  # stride 2: no residual
    # Grouped: both 1x1 convs in 2 groups (half the MAdds) plus a shuffle; residual at 16 -> 16.
    g2 = space.slots[0].choices.index("k3_e1_g2")
    assert space.attribute(0, g2, "gconv1x1.madds") == 2 * (32 * 32 * 16 * 16 // 2)
    assert space.attribute(0, g2, "shuffle.count") == 1 and space.attribute(0, g2, "add.count") == 1
    # Skip: identity where the shape is kept, a 1x1 conv where it changes.
    assert space.attributes_of(0, 8) == {}
    assert space.attribute(1, 8, "conv1x1.madds") == 32 * 32 * 16 * 24


def test_the_spaces_command_shows_a_categorical_space(capsys):
    from tdbnas.cli.main import main

    assert main(["spaces", "fbnet", "--sample", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "fbnet" and len(shown["slots"]) == 22 and len(shown["samples"]) == 2
    assert FBNET_SPACE().genome_of(shown["samples"][0].split())  # samples are written as choice names


def FBNET_SPACE():  # noqa: N802 - the built-in space, looked up when a test needs it
    return CATEGORICAL_SPACES.get("fbnet")
