"""What every latency runner does: time one `.tflite` file on one device, return raw samples.

A runner knows how to reach a device (this machine's interpreter, an Android phone over adb, a
Linux board over ssh) and nothing about search spaces or tables. The measurement protocol
(warm-up, run counts, the robust statistic, re-measuring noisy results) lives in
`tdbnas.latency.measure` and works with any runner.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RunnerUnavailable(RuntimeError):
    """The runner cannot work here; the message says exactly what is missing and how to get it."""


@dataclass(frozen=True)
class Timing:
    """What one timing call returned.

    `samples_ms` holds every timed run when the runner sees them (the local interpreter, the ssh
    agent). Tools that print only aggregates (Android's `benchmark_model`) leave it empty and
    fill `summary_ms` with what they printed (`min`, `max`, `avg`, `std`, and `p5`, `median`,
    `p95` in newer builds), in milliseconds. `details` keeps anything else worth storing (the
    tool's init time, the conditions on the device).
    """

    samples_ms: tuple[float, ...] = ()
    summary_ms: Mapping[str, float] = field(default_factory=dict)
    count: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_ms", tuple(float(v) for v in self.samples_ms))
        if not self.count:
            object.__setattr__(self, "count", len(self.samples_ms))
        if not self.samples_ms and not self.summary_ms:
            raise ValueError("a timing needs per-run samples or the tool's summary")
        bad = [v for v in (*self.samples_ms, *self.summary_ms.values()) if not math.isfinite(v) or v < 0]
        if bad:
            raise ValueError(f"timings must be finite and >= 0 ms, got {bad[:3]}")


class Runner(ABC):
    """Times TFLite models on one device."""

    #: short name used in profiles and tables, e.g. "local", "adb", "ssh"
    name: str = "runner"

    @abstractmethod
    def environment(self) -> dict[str, Any]:
        """Everything a latency depends on besides the model: runtime version, delegate,
        threads, device/CPU model, governor where readable. Stored beside every measurement."""

    @abstractmethod
    def time_model(self, model: Path, *, warmup: int, runs: int, signature: str | None = None) -> list[float]:
        """Run `model` `warmup` times untimed, then `runs` times; return each timed run in ms.

        `signature` selects one signature of a multi-signature model (None: the default one).
        """

    def timing(self, model: Path, *, warmup: int, runs: int, min_seconds: float = 0.0, max_runs: int | None = None,
               signature: str | None = None) -> Timing:
        """Warm up, then time at least `runs` runs and keep going until `min_seconds` of timed runs
        (at most `max_runs`), like `benchmark_model`'s `--num_runs` / `--min_secs`.

        The measurement protocol calls this. The default calls `time_model` and, when the runs took
        less than `min_seconds`, once more for the missing runs; runners that can run for a
        duration in one go, or that only get aggregates from their tool, override it.
        """
        samples = list(self.time_model(model, warmup=warmup, runs=runs, signature=signature))
        total = sum(samples)
        if samples and min_seconds > 0 and total < min_seconds * 1e3:
            per_run = max(total / len(samples), 1e-6)
            more = math.ceil((min_seconds * 1e3 - total) / per_run)
            if max_runs is not None:
                more = min(more, max_runs - len(samples))
            if more > 0:
                samples += self.time_model(model, warmup=warmup, runs=more, signature=signature)
        return Timing(tuple(samples))

    def close(self) -> None:  # noqa: B027 - an optional hook: the local runner holds nothing
        """Release device-side resources (temporary files, connections)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
