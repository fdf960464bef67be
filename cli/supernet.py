"""`tdbnas supernet train | eval | size`: the one-shot supernet of a search space (DetNAS/SPOS)."""

from __future__ import annotations

import argparse
import json

from tdbnas.cli.common import positive_float, positive_int, resolution, table

EPILOG = """\
`train` trains a weight-sharing supernet over every member of a space, one uniformly sampled
path per step (DetNAS / Single Path One-Shot). A fraction of the training images (default
10 %, chosen by --search-seed) is held out as the search split: the supernet never trains on
it, candidates are scored on it, and the val split stays untouched for the final network.
Rerunning the same command resumes from OUT/checkpoint.pt; OUT/config.json holds the settings,
OUT/search_split.json the held-out image ids.

`eval` scores architectures with the trained supernet: per-path batch-norm recalibration on
training images (exact average, default 500), then COCO mAP on the search split.

`size` prints the parameter count and memory of a space's supernet under each weight sharing.

examples:
  tdbnas supernet size --space tdb
  tdbnas supernet train --space tdb --data data/synth --out runs/supernet --epochs 30
  tdbnas supernet train --space tdb --weight-sharing width --data data/synth --out runs/sn-w
  tdbnas supernet train --space my_space.yaml --data DIR --out runs/sn --search-fraction 0.2
  torchrun --nproc-per-node 4 -m tdbnas.cli supernet train --space tdb --data /data/coco --out runs/sn
  tdbnas supernet eval --checkpoint runs/supernet --arch mobiledet-edgetpu
  tdbnas supernet eval --checkpoint runs/supernet/checkpoint.pt --arch 'conv_k3_s2_c32/...' --no-recalibration
"""

# Settings of `tdbnas train` that a supernet run takes as they are.
_SHARED_TRAIN_FLAGS = {"data", "train_split", "resolution", "resize", "head", "width_multiplier", "epochs",
                       "batch_size", "lr", "warmup_epochs", "weight_decay", "seed", "workers", "threads",
                       "max_minutes", "device"}
SUPERNET_FLAGS = (
    ("--space", "space", str, "registered space or description file (default tdb)"),
    ("--weight-sharing", "weight_sharing", str, "none (per-choice weights, default), in or width (sliced)"),
    ("--search-fraction", "search_fraction", positive_float, "share of training images held out for search (0.1)"),
    ("--search-seed", "search_seed", int, "seed choosing the held-out search images (default 0)"),
)


def register(sub: argparse._SubParsersAction) -> None:
    from tdbnas.cli.train import TRAIN_FLAGS, add_augmentation_flags

    parser = sub.add_parser("supernet", help="train a one-shot supernet; score architectures with it",
                            description="The weight-sharing supernet of a search space (DetNAS / SPOS).",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    train = actions.add_parser("train", help="train a supernet (resumes if interrupted)", epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", metavar="FILE", help="YAML/JSON file with settings (keys as in config.json)")
    train.add_argument("--out", required=True, metavar="DIR", help="run directory (resumed if it exists)")
    for flag, name, kind, text in SUPERNET_FLAGS + tuple(f for f in TRAIN_FLAGS if f[1] in _SHARED_TRAIN_FLAGS):
        train.add_argument(flag, dest=name, type=kind, default=None, help=text)
    add_augmentation_flags(train)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=run_train)

    evaluate = actions.add_parser("eval", help="score architectures on the search split", epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH",
                          help="supernet run directory, checkpoint.pt or model.pt")
    evaluate.add_argument("--arch", required=True, nargs="+", metavar="ARCH",
                          help="registered names, architecture strings or .json files")
    evaluate.add_argument("--data", help="dataset root (default: the run's)")
    evaluate.add_argument("--resolution", type=resolution, default=None, metavar="N|HxW",
                          help="input size (default: the run's)")
    evaluate.add_argument("--recalibration-images", type=positive_int, default=500, metavar="N",
                          help="training images for batch-norm recalibration (default 500)")
    evaluate.add_argument("--recalibration-batch-size", type=positive_int, default=32, metavar="N")
    evaluate.add_argument("--no-recalibration", action="store_true", help="score with the supernet's own statistics")
    evaluate.add_argument("--batch-size", type=positive_int, default=32)
    evaluate.add_argument("--max-images", type=positive_int, default=None, help="score the first N search images")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda, auto ...")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(handler=run_eval)

    size = actions.add_parser("size", help="parameters and memory of a space's supernet", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    size.add_argument("--space", default="tdb", help="registered space or description file (default tdb)")
    size.add_argument("--num-classes", type=positive_int, default=90, help="classes of the head (default 90, COCO)")
    size.add_argument("--width-multiplier", type=positive_float, default=1.0)
    size.add_argument("--json", action="store_true", help="print JSON instead of a table")
    size.set_defaults(handler=run_size)


def run_train(args: argparse.Namespace) -> int:
    from tdbnas.cli.train import settings_from
    from tdbnas.search.supernet_train import SupernetTrainConfig, train_supernet

    config = SupernetTrainConfig.from_dict(settings_from(args, [f[1] for f in SUPERNET_FLAGS]
                                                         + sorted(_SHARED_TRAIN_FLAGS)))
    if not config.data:
        raise ValueError("no dataset: pass --data DIR (e.g. from `tdbnas data synth --out DIR`) or set 'data' "
                         "in --config")
    summary = train_supernet(config, args.out)
    print(f"trained {summary['steps']} sampled paths in {summary['train_seconds']:.0f} s -> {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from tdbnas.search.fitness import SupernetEvaluator
    from tdbnas.search.recalibration import RecalibrationSettings

    evaluator = SupernetEvaluator(args.checkpoint, args.data, resolution=args.resolution,
                                  recalibration=RecalibrationSettings(args.recalibration_images,
                                                                      args.recalibration_batch_size),
                                  recalibrate=not args.no_recalibration, batch_size=args.batch_size,
                                  max_eval_images=args.max_images, device=args.device)
    results = [evaluator.evaluate(arch) for arch in args.arch]
    if args.json:
        print(json.dumps({"settings": evaluator.settings, "results": results}, indent=2))
        return 0
    metrics = ("mAP", "mAP_50", "mAP_small", "mAP_medium", "mAP_large")
    rows = [(r["arch"] if len(r["arch"]) <= 60 else r["arch"][:57] + "...", *(f"{r[k]:.4f}" for k in metrics),
             r["recalibration_images"], r["images"], f"{r['seconds']:.1f}") for r in results]
    print(table(["arch", *metrics, "recal images", "search images", "s"], rows,
                right=(*metrics, "recal images", "search images", "s")))
    return 0


def run_size(args: argparse.Namespace) -> int:
    from tdbnas.search.supernet import WEIGHT_SHARING, supernet_size
    from tdbnas.search.supernet_train import load_space

    space = load_space(args.space)
    sizes = [supernet_size(space, num_classes=args.num_classes, width_multiplier=args.width_multiplier,
                           weight_sharing=mode) for mode in WEIGHT_SHARING]
    if args.json:
        print(json.dumps(sizes, indent=2))
        return 0
    gib = 2 ** 30
    rows = [(s["weight_sharing"], f"{s['parameters'] / 1e6:.1f}", f"{s['backbone_parameters'] / 1e6:.1f}",
             f"{s['head_parameters'] / 1e6:.2f}", f"{s['weight_bytes'] / gib:.2f}", f"{s['train_bytes'] / gib:.2f}",
             s["modules"]) for s in sizes]
    print(f"supernet of space {space.name!r} ({args.num_classes} classes); training memory = fp32 weights + SGD "
          "momentum, before one path's gradients and activations")
    print(table(["sharing", "params M", "backbone M", "head M", "weights GiB", "train GiB", "modules"], rows,
                right=("params M", "backbone M", "head M", "weights GiB", "train GiB", "modules")))
    return 0
