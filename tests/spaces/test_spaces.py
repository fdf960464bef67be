"""Search spaces: membership of the references, genome round trips, sampling, mutation,
crossover, the feasibility hook, exact layer enumeration, user descriptions."""

import itertools
import json
import math
import random
import re
from collections import Counter

import pytest

from tdbnas.spaces import (
    SPACES,
    BlockSpace,
    InfeasibleError,
    NotInSpaceError,
    detector_cost,
    get_reference,
    get_space,
)

TOY = {
    "name": "toy",
    "description": "small enough to enumerate every member",
    "blocks": [
        {"name": "stem", "layers": 1, "stride": 2, "widths": [8, 16], "ops": ["conv_k3"]},
        # stride 1 first layer: in == out is possible (16 -> 16) but never a residual
        {"name": "a", "layers": 2, "stride": 1, "widths": [16, 24], "ops": ["ir_k3_e4", "tk_k3_i0.25_o0.75"],
         "skippable": True},
        {"name": "b", "layers": 2, "stride": 2, "widths": [24, 32], "ops": ["er_k3_e4", "ds_k5"], "skippable": True},
    ],
}


@pytest.fixture(scope="module")
def toy():
    return BlockSpace.from_description(TOY)


@pytest.mark.parametrize("name, space", [("mobiledet-edgetpu", "tdb"), ("mobiledet-dsp", "tdb"),
                                         ("mobiledet-gpu", "tdb"), ("mobiledet-cpu", "ibn-cpu"),
                                         ("detnas-300m", "detnas-small"), ("detnas-1.3g", "detnas-large")])
def test_reference_architectures_are_members(name, space):
    arch, space = get_reference(name).arch, get_space(space)
    genome = space.encode(arch)
    assert space.decode(genome) == arch


def test_non_members_are_explained():
    with pytest.raises(NotInSpaceError, match=r"block 0 \(stem\): width 16 is not one of \[32\]"):
        get_space("tdb").encode(get_reference("mobiledet-cpu").arch)
    with pytest.raises(NotInSpaceError, match=r"block 1 \(b1\), layer 1: 'tk_k3_i0.25_o0.75_c16' is not a choice here"):
        get_space("ibn").encode(get_reference("mobiledet-edgetpu").arch)
    with pytest.raises(NotInSpaceError, match="has 8 blocks"):
        get_space("tdb").encode(get_reference("mobilenetv2").arch)
    assert not get_space("ibn-fused").contains(get_reference("mobiledet-dsp").arch)  # DSP has Tucker layers


def test_detnas_300m_decodes_to_the_official_block_list():
    arch = get_reference("detnas-300m").arch
    kinds = [layer.token().split("_c")[0] for _, _, layer in arch.layers()][1:]
    choices = ["sh_k3", "sh_k5", "sh_k7", "xc_k3"]
    official = [2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2]
    assert [k.replace("_s2", "") for k in kinds] == [choices[i] for i in official]


@pytest.mark.parametrize("name", SPACES.names())
def test_space_sizes_are_products_of_slot_choices(name):
    space = get_space(name)
    assert space.size() == math.prod(len(slot.choices) for slot in space.slots)


def test_known_sizes():
    assert get_space("detnas-small").size() == 4 ** 20
    assert get_space("detnas-large").size() == 4 ** 40
    # tdb: stem fixed; b1: 2 widths x (2 ds + 12); b2..b6: widths x 12 x 13^3; b7: 2 widths x 12
    assert get_space("tdb").size() == (2 * 14) * (2 * 12 * 13 ** 3) ** 2 * (3 * 12 * 13 ** 3) ** 3 * (2 * 12)


@pytest.mark.parametrize("name", SPACES.names())
def test_genomes_and_architectures_correspond_one_to_one(name):
    space = get_space(name)
    rng = random.Random(0)
    for _ in range(50):
        genome = space.random_genome(rng)
        arch = space.decode(genome)
        assert space.encode(arch) == genome
        assert space.contains(arch)


def test_layer_enumeration_is_exact_on_an_enumerable_space(toy):
    # Union of every member's placed layers, by brute force over all members.
    members = [toy.decode(g) for g in itertools.product(*(range(len(s.choices)) for s in toy.slots))]
    assert len(members) == toy.size()
    brute = {c for arch in members for c in arch.trace((33, 20)) if not c.layer.is_skip}
    assert toy.layer_configs((33, 20)) == frozenset(brute)
    # and under a width multiplier
    brute_half = {c for arch in members for c in arch.trace(32, 0.5) if not c.layer.is_skip}
    assert toy.layer_configs(32, 0.5) == frozenset(brute_half)


@pytest.mark.parametrize("name", ["tdb", "ibn-cpu", "detnas-small"])
def test_layer_enumeration_covers_sampled_members(name):
    space = get_space(name)
    configs = space.layer_configs(320)
    for seed in range(100):
        for config in space.sample(seed).trace(320):
            assert config.layer.is_skip or config in configs


def test_seeded_sampling_is_reproducible_and_uniform():
    space = get_space("tdb")
    assert space.sample(7) == space.sample(7)
    assert space.sample(7) != space.sample(8)
    rng = random.Random(1)
    slot = next(i for i, s in enumerate(space.slots) if s.name == "b3.2")  # 12 ops + skip
    counts = Counter(space.random_genome(rng)[slot] for _ in range(13_000))
    assert len(counts) == 13
    # each count ~ Binomial(13000, 1/13): mean 1000, sd ~ 30; allow 5 sd
    assert all(abs(n - 1000) < 150 for n in counts.values())


def test_mutation_changes_genes_at_the_requested_rate():
    space = get_space("tdb")
    parent = get_reference("mobiledet-edgetpu").arch
    assert space.mutate(parent, 0, prob=0.0) == parent
    genome, mutant = space.encode(parent), space.encode(space.mutate(parent, 0, prob=1.0))
    assert all(a != b for a, b in zip(genome, mutant))
    rng = random.Random(2)
    changed = sum(a != b for _ in range(200) for a, b in zip(genome, space.mutate_genome(genome, rng, 0.1)))
    assert changed / (200 * len(genome)) == pytest.approx(0.1, abs=0.02)


def test_crossover_takes_each_gene_from_a_parent():
    space = get_space("tdb")
    a, b = get_reference("mobiledet-edgetpu").arch, get_reference("mobiledet-gpu").arch
    ga, gb = space.encode(a), space.encode(b)
    for seed in range(20):
        child = space.encode(space.crossover(a, b, seed))
        assert all(c in (x, y) for c, x, y in zip(child, ga, gb))


def test_feasibility_hook_constrains_sampling_mutation_and_crossover():
    budget = 1.0e9
    space = get_space("tdb").with_feasibility(lambda arch: detector_cost(arch, 320, 90).total.madds <= budget)
    assert get_space("tdb").feasible is None  # the registered space is untouched
    rng = random.Random(3)
    members = [space.sample(rng) for _ in range(5)]
    members += [space.mutate(members[0], rng, 0.3), space.crossover(members[0], members[1], rng)]
    assert all(detector_cost(a, 320, 90).total.madds <= budget for a in members)
    impossible = get_space("tdb").with_feasibility(lambda arch: False)
    with pytest.raises(InfeasibleError, match="no feasible candidate in 50 tries"):
        impossible.sample(0, max_tries=50)


def test_genome_validation():
    space = get_space("tdb")
    with pytest.raises(ValueError, match="genome has 3 genes"):
        space.decode((0, 0, 0))
    with pytest.raises(ValueError, match="out of range for slot 'b1.width'"):
        space.decode((5,) + (0,) * (len(space.slots) - 1))


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.update(colour="red"), "unknown key(s) ['colour']"),
    (lambda d: d["blocks"][1].update(ops=["ir_k3_e4", "skip"]), "set 'skippable: true'"),
    (lambda d: d["blocks"][1].update(ops=["ir_k3_e4_c16"]), "must not set 'c'"),
    (lambda d: d["blocks"][1].update(ops=["ir_e4_k3"]), "write 'ir_k3_e4'"),
    (lambda d: d["blocks"][1].update(widths=[12]), "not a positive multiple of 8"),
    (lambda d: d["blocks"][1].update(stride=3), "'stride' must be 1 or 2"),
    (lambda d: d["blocks"][1].update(layers=0), "'layers' must be a positive integer"),
    (lambda d: d["blocks"][1].pop("widths"), "missing key(s) ['widths']"),
    (lambda d: d["blocks"][2].update(name="a"), "duplicate block names"),
    (lambda d: d["blocks"][2].update(ops=["sh_k3"]), "cannot go from"),
])
def test_bad_descriptions_say_what_is_wrong(change, fragment):
    description = json.loads(json.dumps(TOY))
    change(description)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        BlockSpace.from_description(description)


def test_descriptions_load_from_yaml_and_json_files(tmp_path, toy):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TOY))
    (tmp_path / "s.json").write_text(json.dumps(toy.to_description()))
    for path in (tmp_path / "s.yaml", tmp_path / "s.json"):
        loaded = BlockSpace.from_file(path)
        assert loaded.slots == toy.slots and loaded.name == "toy"
    (tmp_path / "bad.yaml").write_text("blocks: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        BlockSpace.from_file(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="cannot read"):
        BlockSpace.from_file(tmp_path / "missing.yaml")
    # a YAML file is data: tags that would construct Python objects are refused by safe_load
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(ValueError, match="not valid YAML"):
        BlockSpace.from_file(tmp_path / "evil.yaml")


def test_builtin_spaces_round_trip_through_their_descriptions():
    for name in SPACES.names():
        space = get_space(name)
        again = BlockSpace.from_description(space.to_description())
        assert again.slots == space.slots


def test_registry_refuses_duplicates():
    from tdbnas.spaces import register_arch, register_space

    with pytest.raises(ValueError, match="already registered"):
        register_space(BlockSpace.from_description({**TOY, "name": "tdb"}))
    with pytest.raises(ValueError, match="already registered"):
        register_arch("mobiledet-cpu", get_reference("mobiledet-cpu").arch)
    with pytest.raises(KeyError, match="no search space named 'tbd'"):
        get_space("tbd")
