"""Property tests: random members of every space round-trip through string and JSON; mutation
and crossover give members; corrupted strings are rejected cleanly or are themselves canonical."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdbnas.spaces import SPACES, ArchSpec, ArchStringError, get_reference, get_space

SPACE_NAMES = SPACES.names()
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def members(draw):
    space = get_space(draw(st.sampled_from(SPACE_NAMES)))
    genome = tuple(draw(st.integers(0, len(slot.choices) - 1)) for slot in space.slots)
    return space, genome


@PROFILE
@given(members())
def test_random_members_round_trip_through_string_and_json(member):
    space, genome = member
    arch = space.decode(genome)
    text = arch.encode()
    assert ArchSpec.parse(text) == arch
    assert ArchSpec.parse(text).encode() == text
    assert ArchSpec.from_json(arch.to_json()) == arch
    assert space.encode(ArchSpec.parse(text)) == genome


@PROFILE
@given(members(), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
def test_mutation_and_crossover_yield_members(member, seed, prob):
    space, genome = member
    rng = random.Random(seed)
    other = space.random_genome(rng)
    for child in (space.mutate_genome(genome, rng, prob), space.crossover_genomes(genome, other, rng)):
        arch = space.decode(child)  # decoding validates the network (channels, strides)
        assert space.contains(arch)
        assert space.encode(arch) == child


ALPHABET = "abcdeiklorsx_0123456789./,"
VALID = [get_reference(name).arch.encode() for name in ("mobiledet-edgetpu", "mobiledet-cpu", "detnas-300m")]


@st.composite
def corrupted(draw):
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(ALPHABET))
        if edit == "insert":
            text = text[:where] + char + text[where:]
        elif edit == "delete":
            text = text[:where] + text[where + 1:]
        else:
            text = text[:where] + char + text[where + 1:]
    return text


@settings(max_examples=300, deadline=None)
@given(st.one_of(corrupted(), st.text(max_size=60)))
def test_any_string_is_either_canonical_or_rejected_with_a_clear_error(text):
    try:
        arch = ArchSpec.parse(text)
    except ArchStringError as exc:
        assert str(exc)  # a message, and no other exception type escapes the parser
        return
    assert arch.encode() == text  # accepted strings are exactly canonical
