"""One stand-alone training of the accuracy benchmarks, run as a subprocess by `_accuracy.run_pool`.

    python benchmarks/_train_job.py '<TrainingJob as JSON>' --threads 1

Trains with the built-in recipe, resuming from the run directory's checkpoint; with `eval_at`,
it stops at each of those epochs (a truncated run of the same schedule), evaluates, and
continues. Writes `result.json` (final metrics, per-epoch evaluations, training seconds) last,
atomically: a run without it is unfinished.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _accuracy import RECIPE, TrainingJob, dataset  # noqa: E402
from _common import write_atomic  # noqa: E402

METRICS = ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large")


def views(job: TrainingJob, data: Path, augmentation):
    """(train set, val set) for the job's splits (None, None: the Trainer loads them itself)."""
    if job.train_split == "train" and job.val_split == "val":
        return None, None
    if (job.train_split, job.val_split) != ("train-minus-search", "search"):
        raise ValueError(f"unknown splits {job.train_split!r} / {job.val_split!r}")
    from tdbnas.search.splits import SearchSplit, build_search_split

    return build_search_split(data, SearchSplit(), size=RECIPE["resolution"], augmentation=augmentation)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("job")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    raw = json.loads(args.job)
    job = TrainingJob(**{**raw, "out": Path(raw["out"]), "eval_at": tuple(raw["eval_at"])})

    import torch

    from tdbnas.detection.train import TrainConfig, Trainer, augmentation

    torch.set_num_threads(args.threads)
    data = dataset()
    base = TrainConfig(arch=job.arch, data=str(data), epochs=job.epochs, seed=job.seed, threads=args.threads,
                       train_split=job.train_split, val_split=job.val_split, progress=False, checkpoint_minutes=2.0,
                       **RECIPE)
    train_set, val_set = views(job, data, augmentation(base))
    stops = sorted(e for e in job.eval_at if e < (job.stop_epochs or job.epochs)) + [job.stop_epochs]
    evaluations = []
    summary = None
    for stop in stops:
        config = TrainConfig(**{**base.__dict__, "stop_epochs": stop})
        summary = Trainer(config, job.out, train_set=train_set, val_set=val_set).run()
        metrics = summary["eval"]["metrics"]
        evaluations.append({"epochs": round(summary["epochs"], 3), "train_seconds": summary["train_seconds"],
                            **{k: metrics[k] for k in METRICS if k in metrics}})
    final = evaluations[-1]
    result = {"job": job.to_json(), **{k: final[k] for k in METRICS if k in final}, "epochs": final["epochs"],
              "train_seconds": final["train_seconds"], "steps": summary["steps"], "evaluations": evaluations,
              "threads": args.threads}
    write_atomic(job.result_path, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
