"""The built-in accuracy setting shared by the ground-truth, signal and search-quality benchmarks.

One place for what "the built-in setting" means, so every accuracy number of these benchmarks
is measured on the same thing: the `tdb-lite` space at 160x160 on the built-in synthetic
dataset (2,000 train / 500 val images, 6 classes) with the measured from-scratch recipe
(`benchmarks/results/detection_train.md`): SSDLite predictors on C3, C4, C5 + 3 extra layers,
zero-initialised residual branches, batch 16, SGD peak lr 0.6, half an epoch of warm-up, cosine,
horizontal flips only.

Stand-alone trainings run as subprocesses of `train_one.py`-style workers (`TrainingPool`):
this 2-core machine trains two 1-thread runs side by side 1.4x faster than one 2-thread run
(43.8 vs 30-35 images/s, measured when the ground truth was planned), and a subprocess per run
keeps every run resumable on its own (its checkpoint lives in its run directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
CACHE = BENCHMARKS / ".cache" / "accuracy"
DATA = BENCHMARKS / ".cache" / "synth"
SPACE = "tdb-lite"
RESOLUTION = 160
NUM_CLASSES = 6
HEAD_SETTINGS = {"from_features": ["C3", "C4", "C5"], "extra_depths": [512, 256, 256]}
#: The measured from-scratch recipe (TrainConfig fields; epochs and seed are per run).
RECIPE = {"head": HEAD_SETTINGS, "zero_init_residual": True, "batch_size": 16, "lr": 0.6, "warmup_epochs": 0.5,
          "random_crop": False, "resolution": RESOLUTION}
#: Budgets of the signal benchmark: these quantiles of the space's predicted CPU latency.
BUDGET_QUANTILES = (0.25, 0.5, 0.75)
#: Random members whose predicted latencies define the space's latency distribution.
DISTRIBUTION_SAMPLES = 20_000


def dataset() -> Path:
    """The built-in dataset (generated once; an existing one with the same settings is reused)."""
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

    return write_synthetic_dataset(DATA, SynthConfig(), progress=False)


def head():
    from tdbnas.spaces import SSDLiteHead

    return SSDLiteHead(num_classes=NUM_CLASSES, from_features=tuple(HEAD_SETTINGS["from_features"]),
                       extra_depths=tuple(HEAD_SETTINGS["extra_depths"]))


def space():
    from tdbnas.spaces import get_space

    return get_space(SPACE)


def table_path() -> Path:
    return CACHE / "lut.sqlite"


def cpu_predictor():
    """The measured 1-thread CPU profile of the space at 160x160 (profiled on first use)."""
    from tdbnas.latency.profiles import get_predictor
    from tdbnas.latency.table import LatencyTable

    table_path().parent.mkdir(parents=True, exist_ok=True)
    return get_predictor("cpu", RESOLUTION, space=space(), table=LatencyTable(table_path()), head=head(),
                         progress=False)


def space_latencies(predictor=None, samples: int = DISTRIBUTION_SAMPLES):
    """Predicted CPU ms of `samples` uniformly random members (seeds 0..samples-1)."""
    import numpy as np

    from tdbnas.latency.space_predictor import SpacePredictor

    member_space = space()
    genomes = np.array([member_space.random_genome(i) for i in range(samples)])
    return SpacePredictor(predictor or cpu_predictor(), member_space, RESOLUTION, head=head()).predict_genomes(genomes)


def budgets(predictor=None) -> dict[float, float]:
    """The three CPU budgets (ms) of the signal benchmark: quantiles of the space's latency."""
    import numpy as np

    values = space_latencies(predictor)
    return {q: float(np.quantile(values, q)) for q in BUDGET_QUANTILES}


def costs(arch: str) -> dict[str, float]:
    """Whole-detector MAdds and parameters at the benchmark's resolution and head."""
    from tdbnas.spaces import detector_cost, resolve_arch

    total = detector_cost(resolve_arch(arch), RESOLUTION, NUM_CLASSES, head=head()).total
    return {"madds": float(total.madds), "params": float(total.params)}


def run_name(arch: str) -> str:
    return hashlib.sha1(arch.encode()).hexdigest()[:12]


# ---- stand-alone training in subprocesses ---------------------------------------------------------
@dataclass(frozen=True)
class TrainingJob:
    """One stand-alone training: `arch` from scratch with the recipe for `epochs` epochs.

    `stop_epochs` ends it early (the schedule stays the `epochs`-long cosine: a truncated run,
    as successive halving trains a candidate for part of the full schedule); `eval_at` adds
    evaluations at those epochs. `train_split`/`val_split` name the dataset splits or, for a
    search split, `train-minus-search` / `search` (the supernet's held-out images)."""

    arch: str
    seed: int
    epochs: float
    out: Path
    stop_epochs: float | None = None
    eval_at: tuple[float, ...] = ()
    train_split: str = "train"
    val_split: str = "val"

    @property
    def result_path(self) -> Path:
        return self.out / "result.json"

    def result(self) -> dict[str, Any] | None:
        return json.loads(self.result_path.read_text()) if self.result_path.is_file() else None

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "seed": self.seed, "epochs": self.epochs, "out": str(self.out),
                "stop_epochs": self.stop_epochs, "eval_at": list(self.eval_at), "train_split": self.train_split,
                "val_split": self.val_split}


def run_pool(jobs: Sequence[TrainingJob], workers: int = 2, threads: int = 1,
             log: Callable[[str], None] = print) -> None:
    """Train every job without a result, `workers` subprocesses at a time (each `threads`
    threads). A killed pool loses nothing: each run resumes from its own checkpoint."""
    pending = [job for job in jobs if job.result() is None]
    running: list[tuple[TrainingJob, subprocess.Popen, float]] = []
    done = len(jobs) - len(pending)
    log(f"{done} of {len(jobs)} trainings already done; {len(pending)} to run, {workers} at a time")
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                job.out.mkdir(parents=True, exist_ok=True)
                command = [sys.executable, str(BENCHMARKS / "_train_job.py"), json.dumps(job.to_json()),
                           "--threads", str(threads)]
                with open(job.out / "worker.log", "a") as handle:
                    running.append((job, subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                                          env={**os.environ, "OMP_NUM_THREADS": str(threads)}),
                                    time.monotonic()))
            time.sleep(5)
            for entry in list(running):
                job, process, started = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                if process.returncode != 0 or job.result() is None:
                    raise RuntimeError(f"training {job.out} failed (exit {process.returncode}); see "
                                       f"{job.out / 'worker.log'}")
                done += 1
                result = job.result()
                log(f"[{done}/{len(jobs)}] {job.arch[:60]}... seed {job.seed}: mAP {result['mAP']:.4f} "
                    f"({(time.monotonic() - started) / 60:.1f} min)")
    finally:
        for _, process, _ in running:
            process.terminate()
