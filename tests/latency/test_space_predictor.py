"""Genome-batch prediction equals per-architecture prediction, fast."""

import random
import time

import numpy as np
import pytest

from tdbnas.latency.predictor import LatencyPredictor, MissingEntriesError
from tdbnas.latency.space_predictor import SpacePredictor
from tdbnas.latency.table import Calibration, Entry, LatencyTable
from tdbnas.latency.units import space_units
from tdbnas.spaces import SSDLiteHead, get_space


def _filled(tmp_path, space, resolution, head=None, drop=0):
    head = head or SSDLiteHead()
    table = LatencyTable(tmp_path / "lut.sqlite")
    table.ensure_profile("p", kind="measured", runner="local")
    rng = np.random.default_rng(0)
    units = sorted(space_units(space, resolution, head=head), key=lambda u: u.key)[drop:]
    table.put_many(Entry("p", "v", u.key, float(rng.uniform(0.1, 2)), "min", None, (), {}, "t") for u in units)
    return table


@pytest.mark.parametrize("name, resolution", [("tdb", 320), ("ibn-cpu", (160, 96)), ("detnas-small", 128)])
def test_genome_tables_equal_predict_many(tmp_path, name, resolution):
    space = get_space(name)
    table = _filled(tmp_path, space, resolution)
    table.set_calibration("p", Calibration(1.3, 2.0, "v", (), "t", "test"))
    predictor = LatencyPredictor(table, "p")
    fast = SpacePredictor(predictor, space, resolution)
    rng = random.Random(1)
    genomes = np.array([space.random_genome(rng) for _ in range(200)])
    archs = [space.decode(tuple(int(g) for g in row)) for row in genomes]
    np.testing.assert_allclose(fast.predict_genomes(genomes), predictor.predict_many(archs, resolution), rtol=1e-12)
    np.testing.assert_allclose(fast.predict_genomes(genomes, calibrated=False),
                               predictor.predict_many(archs, resolution, calibrated=False), rtol=1e-12)


def test_over_100k_genomes_per_second(tmp_path):
    space = get_space("tdb")
    fast = SpacePredictor(LatencyPredictor(_filled(tmp_path, space, 320), "p"), space, 320)
    rng = random.Random(2)
    genomes = np.array([space.random_genome(rng) for _ in range(100_000)])
    best = min(_seconds(fast.predict_genomes, genomes) for _ in range(3))
    assert len(genomes) / best > 100_000


def _seconds(function, argument):
    start = time.perf_counter()
    function(argument)
    return time.perf_counter() - start


def test_missing_entries_are_named_with_the_command(tmp_path):
    space = get_space("ibn")
    fast = SpacePredictor(LatencyPredictor(_filled(tmp_path, space, 160, drop=5), "p"), space, 160)
    genomes = np.array([space.random_genome(random.Random(i)) for i in range(300)])
    with pytest.raises(MissingEntriesError, match="tdbnas profile"):
        fast.predict_genomes(genomes)


def test_a_profile_with_a_whole_model_term_falls_back_to_predict_many(tmp_path):
    from tdbnas.latency.profiles import get_predictor

    space = get_space("ibn")
    table = LatencyTable(tmp_path / "lut.sqlite")
    predictor = get_predictor("edgetpu", 160, space=space, table=table)
    fast = SpacePredictor(predictor, space, 160)
    genomes = np.array([space.random_genome(random.Random(i)) for i in range(20)])
    archs = [space.decode(tuple(int(g) for g in row)) for row in genomes]
    assert not fast.exact_tables
    np.testing.assert_allclose(fast.predict_genomes(genomes), predictor.predict_many(archs, 160))


def test_bad_genome_shape_is_explained(tmp_path):
    space = get_space("ibn")
    fast = SpacePredictor(LatencyPredictor(_filled(tmp_path, space, 160), "p"), space, 160)
    with pytest.raises(ValueError, match=r"genomes must be \[N, 29\]"):
        fast.predict_genomes(np.zeros((3, 4), dtype=int))
