"""Supernet cost on the `tdb` space: size, step time against stand-alone training, and the
seconds one candidate costs to score (BN recalibration + COCO evaluation).

* size: parameters and memory under each weight sharing (built on the meta device);
* step time at the training resolution: `Trainer.train_step` on the supernet with a path fixed
  versus on a stand-alone SSDLite of the same path, interleaved per path, medians of the ratio;
* per candidate: recalibration on R training images and evaluation on E search images, timed
  and extrapolated linearly to the DetNAS setting (500 recalibration images) and a search split
  of 10 % of the synthetic training set (200 images).

    python benchmarks/supernet.py                              # tdb, 160x160, ~10 min here
    python benchmarks/supernet.py --paths 1 --steps 2 --name supernet_smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import summary, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tdb")
    parser.add_argument("--weight-sharing", default="none")
    parser.add_argument("--data", default="benchmarks/.cache/synth_supernet", help="dataset dir (generated if missing)")
    parser.add_argument("--resolution", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch for the step-time comparison")
    parser.add_argument("--paths", type=int, default=3, help="sampled paths to time")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per path and model (after one warm-up)")
    parser.add_argument("--recal-images", type=int, default=64, help="recalibration images actually run")
    parser.add_argument("--eval-images", type=int, default=40, help="search images actually evaluated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="supernet")
    args = parser.parse_args()

    import torch

    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset
    from tdbnas.detection.train import TrainConfig, Trainer
    from tdbnas.search.fitness import SupernetEvaluator
    from tdbnas.search.recalibration import RecalibrationSettings
    from tdbnas.search.supernet import WEIGHT_SHARING, sample_path, supernet_size
    from tdbnas.search.supernet_train import SupernetTrainConfig, SupernetTrainer, load_space

    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    sizes = {mode: supernet_size(space, num_classes=6, weight_sharing=mode) for mode in WEIGHT_SHARING}
    coco_sizes = {mode: supernet_size(space, num_classes=90, weight_sharing=mode) for mode in WEIGHT_SHARING}

    data = Path(args.data)
    write_synthetic_dataset(data, SynthConfig(num_train=400, num_val=20, image_size=args.resolution), progress=False)
    common = dict(data=str(data), resolution=args.resolution, batch_size=args.batch_size, workers=0, progress=False,
                  threads=args.threads, channels_last=True, random_crop=False)
    started = time.perf_counter()
    supernet_trainer = SupernetTrainer(SupernetTrainConfig(space=args.space, weight_sharing=args.weight_sharing,
                                                           **common), Path("benchmarks/.cache/runs/supernet_bench"))
    build_seconds = time.perf_counter() - started
    from tdbnas.detection.data import collate_detection

    images, targets = collate_detection([supernet_trainer.train_view[i] for i in range(args.batch_size)])

    def timed_steps(trainer) -> list[float]:
        Trainer.train_step(trainer, images, targets)  # warm-up
        samples = []
        for _ in range(args.steps):
            start = time.perf_counter()
            Trainer.train_step(trainer, images, targets)  # the parent's step: the path stays fixed
            samples.append(time.perf_counter() - start)
        return samples

    per_path = []
    for index in range(args.paths):
        arch = sample_path(space, index, seed=123)
        supernet_trainer.model.set_active(arch)
        standalone = Trainer(TrainConfig(arch=arch.encode(), val_split="", **common), "benchmarks/.cache/runs/sa",
                             train_set=supernet_trainer.train_view)
        standalone_samples = timed_steps(standalone)
        supernet_samples = timed_steps(supernet_trainer)
        per_path.append({"arch": arch.encode(), "standalone_s": summary(standalone_samples),
                         "supernet_s": summary(supernet_samples),
                         "ratio": statistics.median(supernet_samples) / statistics.median(standalone_samples)})
        print(f"path {index}: stand-alone {statistics.median(standalone_samples):.3f} s/step, supernet "
              f"{statistics.median(supernet_samples):.3f} s/step")

    # Scoring cost: the evaluator on the same (barely trained) supernet, in memory.
    evaluator = SupernetEvaluator(supernet_trainer.model, data, resolution=args.resolution,
                                  recalibration=RecalibrationSettings(images=args.recal_images, batch_size=32),
                                  batch_size=32, max_eval_images=args.eval_images)
    scoring = []
    for index in range(args.paths):
        result = evaluator.evaluate(sample_path(space, index, seed=321))
        scoring.append({k: result[k] for k in ("recalibration_images", "recalibration_seconds", "images",
                                               "eval_seconds", "seconds")})
    recal_per_image = statistics.median(s["recalibration_seconds"] / s["recalibration_images"] for s in scoring)
    eval_per_image = statistics.median(s["eval_seconds"] / s["images"] for s in scoring)
    estimate = {"recalibration_500_s": round(500 * recal_per_image, 1), "eval_200_s": round(200 * eval_per_image, 1)}
    estimate["candidate_s"] = round(estimate["recalibration_500_s"] + estimate["eval_200_s"], 1)

    ratio = statistics.median(p["ratio"] for p in per_path)
    gib = 2 ** 30
    lines = [f"space `{args.space}`, {args.resolution}x{args.resolution}, batch {args.batch_size}, "
             f"{args.threads} threads, weight sharing `{args.weight_sharing}`", "",
             "| sharing | params (M), 6 classes | params (M), 90 classes | weights GiB | weights + SGD momentum GiB |",
             "|---|---:|---:|---:|---:|"]
    for mode in WEIGHT_SHARING:
        s, c = sizes[mode], coco_sizes[mode]
        lines.append(f"| {mode} | {s['parameters'] / 1e6:.1f} | {c['parameters'] / 1e6:.1f} | "
                     f"{c['weight_bytes'] / gib:.2f} | {c['train_bytes'] / gib:.2f} |")
    lines += ["", f"supernet build (init of every choice): {build_seconds:.0f} s", "",
              "| path | stand-alone s/step | supernet s/step | ratio |", "|---|---:|---:|---:|"]
    for index, p in enumerate(per_path):
        lines.append(f"| {index} | {p['standalone_s']['median']:.3f} | {p['supernet_s']['median']:.3f} | "
                     f"{p['ratio']:.2f} |")
    lines += ["", f"median supernet / stand-alone step time: {ratio:.2f}", "",
              f"scoring one candidate: recalibration {recal_per_image * 1000:.1f} ms/image, evaluation "
              f"{eval_per_image * 1000:.1f} ms/image (batch 32); estimated {estimate['recalibration_500_s']} s for "
              f"500 recalibration images + {estimate['eval_200_s']} s for 200 search images = "
              f"{estimate['candidate_s']} s per candidate"]
    record = {"space": args.space, "resolution": args.resolution, "batch_size": args.batch_size,
              "threads": args.threads, "weight_sharing": args.weight_sharing, "sizes_6_classes": sizes,
              "sizes_90_classes": coco_sizes, "build_seconds": build_seconds, "per_path": per_path,
              "median_step_ratio": ratio, "scoring": scoring, "per_image_s": {"recalibration": recal_per_image,
                                                                               "evaluation": eval_per_image},
              "estimate": estimate}
    json_path, md_path = write_results(args.name, record, "\n".join(lines))
    print("\n".join(lines))
    print(f"-> {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
