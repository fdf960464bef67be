"""Shared fixtures of the search tests: a tiny space that brute force can enumerate, modelled
latency predictors in a throwaway table (never the user's cache, never the measured cpu
profile), and a fitness that counts its calls and can be told to die."""

import itertools

import pytest

from tdbnas.latency.profiles import get_predictor
from tdbnas.latency.table import LatencyTable
from tdbnas.search import SyntheticFitness
from tdbnas.spaces import BlockSpace, get_space


def tiny_description(name="tiny", *, b2_ops=("ir_k3_e4", "ir_k5_e4"), c5_widths=(48, 64), c5_ops=("ir_k3_e4",),
                     c5_layers=1):
    """Stride-2 stem, then blocks up to C5 (stride 32) and one block after it, which latency
    units cut off but MAdds count: 768 members with the defaults."""
    return {"name": name, "blocks": [
        {"name": "stem", "layers": 1, "stride": 2, "widths": [16], "ops": ["conv_k3"]},
        {"name": "b1", "layers": 1, "stride": 2, "widths": [16, 24], "ops": ["ir_k3_e4", "er_k3_e4"]},
        {"name": "b2", "layers": 2, "stride": 2, "widths": [24, 32], "ops": list(b2_ops), "skippable": True},
        {"name": "b3", "layers": 1, "stride": 2, "widths": [32, 40], "ops": ["ir_k3_e4", "er_k3_e4"]},
        {"name": "b4", "layers": c5_layers, "stride": 2, "widths": list(c5_widths), "ops": list(c5_ops)},
        {"name": "b5", "layers": 1, "stride": 2, "widths": [64, 96], "ops": ["conv_k1"]},
    ]}


def all_members(space):
    return [space.decode(genome) for genome in itertools.product(*(range(len(slot)) for slot in space.slots))]


@pytest.fixture(scope="session")
def make_tiny():
    """`make_tiny(name, **overrides)`: a variant of the tiny space."""
    return lambda name="tiny", **overrides: BlockSpace.from_description(tiny_description(name, **overrides))


@pytest.fixture(scope="session")
def members():
    """`members(space)`: every member of a small space, in genome order."""
    return all_members


@pytest.fixture(scope="session")
def tiny():
    return BlockSpace.from_description(tiny_description())


@pytest.fixture(scope="session")
def lut(tmp_path_factory):
    table = LatencyTable(tmp_path_factory.mktemp("search-lut") / "lut.sqlite")
    yield table
    table.close()


@pytest.fixture(scope="session")
def tdb():
    return get_space("tdb")


@pytest.fixture(scope="session")
def tdb_predictors(lut, tdb):
    """Modelled Edge TPU and DSP predictors covering the whole tdb space at 320x320."""
    return {name: get_predictor(name, 320, space=tdb, table=lut) for name in ("edgetpu", "dsp")}


class Killed(Exception):
    """Stands for a kill (Ctrl-C, OOM, preemption) in the middle of an evaluation."""


class CountingFitness:
    """A synthetic fitness that records every architecture it is asked about and can raise at
    its n-th call (a kill in the middle of a search)."""

    def __init__(self, space, seed=0, die_at=None, check=None):
        self.inner = SyntheticFitness(space, seed)
        self.calls = []
        self.die_at = die_at
        self.check = check

    def __call__(self, arch):
        self.calls.append(arch.encode())
        if self.die_at is not None and len(self.calls) == self.die_at:
            raise Killed(f"killed at evaluation {self.die_at}")
        if self.check is not None:
            self.check(arch)
        return self.inner(arch)


@pytest.fixture
def counting():
    return CountingFitness
