"""Where evaluations run: in this process, or on Ray actors (a local cluster or one by address).

The search hands an evaluator (`run(archs, on_result)`) a generation's candidates, already fixed, as architecture
strings; the evaluator reports each result as it finishes, and the search commits it keyed by
architecture. Nothing depends on the order results arrive in, so serial and Ray runs give the
same database and the same answer.

The fitness function comes from a *factory*: a picklable zero-argument callable that returns
the function (or an object with an `evaluate(arch)` method, like the supernet evaluator). It is
called once per worker, so each Ray actor loads the supernet once and keeps it for all its
evaluations, rather than shipping weights with every task (DetNAS used a RabbitMQ farm for the
same purpose, megvii-model/DetNAS#29). Ray serialises the factory; user files are never pickled.

Ray's local start-up costs ~10 s on a small machine (measured on 2 shared cores: `ray.init`
11.8 s, two actors 0.9 s): worth it when one evaluation takes a minute, not for toy fitness.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tdbnas.spaces import ArchSpec

FitnessFn = Callable[[ArchSpec], Mapping[str, Any]]
#: Zero-argument and picklable; returns a `FitnessFn` or an object with `.evaluate(arch)`.
FitnessFactory = Callable[[], Any]


def as_fitness(obj: Any) -> FitnessFn:
    """The fitness function of `obj`: its `evaluate` method if it has one, else `obj` itself."""
    method = getattr(obj, "evaluate", None)
    if callable(method):
        return method
    if callable(obj):
        return obj
    raise TypeError(f"a fitness must be callable or have an evaluate(arch) method, got {type(obj).__name__}")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Result:
    arch: str
    fitness: dict[str, Any]
    seconds: float
    worker: str


def _timed(fitness: FitnessFn, arch: str) -> Result:
    start = time.perf_counter()
    value = fitness(ArchSpec.parse(arch))
    seconds = time.perf_counter() - start
    if not isinstance(value, Mapping):
        raise TypeError(f"the fitness function must return a dict such as {{'mAP': 0.23}}, got "
                        f"{type(value).__name__} for {arch}")
    return Result(arch, dict(value), seconds, worker_name())


class Evaluator(Protocol):
    def run(self, archs: Sequence[str], on_result: Callable[[Result], None]) -> None:
        """Evaluate every arch; call `on_result` (in this process) as each finishes."""

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class SerialEvaluator:
    """Evaluations one after the other in this process."""

    def __init__(self, fitness: Any = None, *, factory: FitnessFactory | None = None):
        if (fitness is None) == (factory is None):
            raise ValueError("give either a fitness function or a factory")
        self._fitness = None if fitness is None else as_fitness(fitness)
        self._factory = factory

    def run(self, archs: Sequence[str], on_result: Callable[[Result], None]) -> None:
        if self._fitness is None:
            self._fitness = as_fitness(self._factory())  # type: ignore[misc]
        for arch in archs:
            on_result(_timed(self._fitness, arch))

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": "serial"}


class _Worker:
    """A Ray actor: builds the fitness once from the factory, then evaluates strings."""

    def __init__(self, factory: FitnessFactory):
        self._fitness = as_fitness(factory())

    def evaluate(self, arch: str) -> Result:
        return _timed(self._fitness, arch)


class RayEvaluator:
    """Evaluations on Ray actors, one per worker, each holding its own fitness (e.g. a loaded
    supernet). `address=None` starts a local cluster with `workers` CPUs (stopped by `close`);
    an address (`auto`, `ray://host:10001`, `host:6379`) joins an existing one. If Ray is
    already initialised in this process, that cluster is used and left running."""

    def __init__(self, factory: FitnessFactory, *, address: str | None = None, workers: int | None = None,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0):
        try:
            import ray
        except ImportError:
            raise RuntimeError("Ray is not installed: pip install 'tdbnas[distributed]', or run serially") from None
        self._ray = ray
        self.address = address
        start = time.perf_counter()
        self._owns = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                       "log_to_driver": False}
            if address is None and workers is not None:
                options["num_cpus"] = max(1, int(round(workers * cpus_per_worker)))
            ray.init(address=address, **options)
            self._owns = True
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))
        self.workers = workers
        remote = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)(_Worker)
        self._actors = [remote.remote(factory) for _ in range(workers)]
        self.startup_seconds = time.perf_counter() - start

    def run(self, archs: Sequence[str], on_result: Callable[[Result], None]) -> None:
        ray = self._ray
        pending = list(archs)
        idle = list(self._actors)
        in_flight: dict[Any, Any] = {}
        while pending or in_flight:
            while pending and idle:
                actor = idle.pop(0)
                in_flight[actor.evaluate.remote(pending.pop(0))] = actor
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                idle.append(in_flight.pop(ref))
                on_result(ray.get(ref))  # a worker's exception is re-raised here

    def close(self) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):  # best effort: the cluster may be gone already
                self._ray.kill(actor)
        self._actors = []
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()

    def describe(self) -> dict[str, Any]:
        return {"kind": "ray", "address": self.address or "local", "workers": self.workers,
                "startup_seconds": round(self.startup_seconds, 2)}


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def make_evaluator(factory: FitnessFactory, ray: bool | str | None = "auto", *, workers: int | None = None,
                   cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0) -> Evaluator:
    """`ray`: "auto" (a local Ray cluster when Ray is installed, else serial), False/None
    (serial), True or "local" (a local cluster), or a cluster address."""
    if ray in (None, False) or (ray == "auto" and not ray_available()):
        return SerialEvaluator(factory=factory)
    address = None if ray in (True, "auto", "local", "") else str(ray)
    return RayEvaluator(factory, address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                        gpus_per_worker=gpus_per_worker)


@dataclass(frozen=True)
class SupernetFactory:
    """Builds `tdbnas.search.fitness.SupernetEvaluator` (the weight-sharing supernet with BN
    recalibration per path, DetNAS `test_server.py`) once in each worker. Picklable: paths,
    names and numbers only; the evaluator loads the checkpoint itself, in the worker.
    `data=None` takes the dataset the supernet run recorded."""

    checkpoint: str
    data: str | None = None
    space: str | None = None
    resolution: tuple[int, int] | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def check(self) -> None:
        """Fail early, in the driver, when the evaluator module cannot be imported."""
        self._cls()

    def _cls(self) -> Any:
        try:
            from tdbnas.search.fitness import SupernetEvaluator
        except ImportError as exc:
            raise RuntimeError(f"the supernet evaluator (tdbnas.search.fitness.SupernetEvaluator) cannot be imported "
                               f"({exc}); from Python, tdbnas.search.run_search(space, fitness, constraints, settings, "
                               "out) takes any fitness function") from None
        return SupernetEvaluator

    def __call__(self) -> Any:
        return self._cls()(self.checkpoint, self.data, space=self.space, resolution=self.resolution,
                           **dict(self.options))


__all__ = ["Evaluator", "FitnessFactory", "FitnessFn", "RayEvaluator", "Result", "SerialEvaluator",
           "SupernetFactory", "as_fitness", "make_evaluator", "ray_available", "worker_name"]
