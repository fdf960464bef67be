"""Evaluators: serial in-process, Ray actors built once per worker from a factory, and the same
search result either way."""

import os
import sqlite3
import sys
from pathlib import Path

import pytest

from tdbnas.search import (
    Budget,
    Constraints,
    SearchSettings,
    SerialEvaluator,
    SyntheticFitness,
    as_fitness,
    make_evaluator,
    parallel,
    ray_available,
    run_search,
)
from tdbnas.spaces import get_reference

RES = 320
SETTINGS = SearchSettings(population=8, parents=3, mutations=3, crossovers=3, generations=3, seed=6)


class LoggingFactory:
    """Builds a synthetic fitness and notes each construction (pid) in a file."""

    def __init__(self, space, log: Path):
        self.space, self.log = space, log

    def __call__(self):
        with open(self.log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return SyntheticFitness(self.space, seed=1)


def rows(run_dir):
    con = sqlite3.connect(run_dir / "search.sqlite")
    data = con.execute("SELECT arch, genome, generation, position, origin, latency, madds, params, fitness, metric "
                       "FROM evaluations ORDER BY generation, position").fetchall()
    workers = {row[0] for row in con.execute("SELECT DISTINCT worker FROM evaluations")}
    con.close()
    return data, workers


@pytest.fixture(scope="module")
def constraints(tdb_predictors):
    return Constraints([Budget(tdb_predictors["edgetpu"], 12.0)], resolution=RES)


def test_serial_evaluator_builds_the_fitness_once(tmp_path, tdb, constraints):
    log = tmp_path / "constructions.txt"
    evaluator = SerialEvaluator(factory=LoggingFactory(tdb, log))
    result = run_search(tdb, evaluator, constraints, SETTINGS, tmp_path / "run", plot=False)
    assert log.read_text().split() == [str(os.getpid())] and len(result.evaluations) == 24
    _, workers = rows(tmp_path / "run")
    assert workers == {parallel.worker_name()}


def test_fitness_objects_and_results_are_checked(tdb):
    class Evaluator:
        def evaluate(self, arch):
            return {"mAP": 0.5}

    assert as_fitness(Evaluator())(get_reference("mobiledet-edgetpu").arch) == {"mAP": 0.5}
    with pytest.raises(TypeError, match="callable or have an evaluate"):
        as_fitness(3)
    evaluator = SerialEvaluator(lambda arch: 0.5)
    with pytest.raises(TypeError, match="must return a dict"):
        evaluator.run([get_reference("mobiledet-edgetpu").arch.encode()], lambda result: None)
    with pytest.raises(ValueError, match="either a fitness function or a factory"):
        SerialEvaluator()


def test_make_evaluator_falls_back_to_serial_without_ray(monkeypatch, tdb):
    factory = SyntheticFitness(tdb).factory
    assert isinstance(make_evaluator(factory, ray=False), SerialEvaluator)
    assert isinstance(make_evaluator(factory, ray=None), SerialEvaluator)
    monkeypatch.setattr(parallel, "ray_available", lambda: False)
    assert isinstance(make_evaluator(factory, ray="auto"), SerialEvaluator)


@pytest.mark.slow
@pytest.mark.skipif(not ray_available(), reason="needs ray")
def test_ray_workers_give_the_serial_result(tmp_path, tdb, constraints):
    """~15 s on 2 shared cores, most of it `ray.init`."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this test file is not importable by workers
    serial = run_search(tdb, SyntheticFitness(tdb, seed=1), constraints, SETTINGS, tmp_path / "serial", plot=False)
    log = tmp_path / "constructions.txt"
    evaluator = make_evaluator(LoggingFactory(tdb, log), ray="local", workers=2)
    try:
        assert evaluator.describe()["kind"] == "ray" and evaluator.describe()["workers"] == 2
        result = run_search(tdb, evaluator, constraints, SETTINGS, tmp_path / "ray", plot=False)
    finally:
        evaluator.close()
    serial_rows, _ = rows(tmp_path / "serial")
    ray_rows, workers = rows(tmp_path / "ray")
    assert ray_rows == serial_rows and result.best.arch == serial.best.arch
    constructions = log.read_text().split()
    assert len(constructions) == 2 and str(os.getpid()) not in constructions  # once per actor, not per task
    assert {w.rsplit(":", 1)[1] for w in workers} == set(constructions)
