"""`tdbnas train` and `tdbnas eval`: train an SSDLite detector on a COCO-format dataset, score it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tdbnas.cli.common import positive_float, positive_int, table

TRAIN_EPILOG = """\
Settings come from the defaults, then --config FILE (YAML or JSON, keys as in config.json of a
run), then flags. Rerunning the same command resumes from OUT/checkpoint.pt; the resolved
settings are saved as OUT/config.json. Under torchrun the run uses DistributedDataParallel.

Data-dependent defaults are resolved when the run starts and saved in config.json: without
--epochs, 15 epochs on 2,000+ images and more on smaller sets (up to 200); --head auto fits the
anchors to the training boxes (OUT/head_proposal.json has the matched shares; see `tdbnas data
check`); a dataset with no validation split gets one carved from train (--val-fraction, under
OUT/data). --strong-augmentation adds SSD's photometric distortion to crop and flip.

examples:
  tdbnas data synth --out data/synth
  tdbnas train --data data/synth --arch mobiledet-edgetpu --out runs/edgetpu --epochs 15
  tdbnas train --data my_labels --resolution 320 --head auto --strong-augmentation --out runs/mine
  tdbnas train --config my_run.yaml --out runs/exp1 --lr 0.1
  torchrun --nproc-per-node 4 -m tdbnas.cli train --data /data/coco --resolution 320 --out runs/coco
"""

EVAL_EPILOG = """\
Scores a trained model with pycocotools' COCOeval (bbox): mAP@[.5:.95], @.5, @.75 and
small/medium/large, written as JSON. With a run directory's model.pt or checkpoint.pt, the
architecture, resolution and data default to the run's config.json.

examples:
  tdbnas eval --weights runs/edgetpu/model.pt
  tdbnas eval --weights runs/edgetpu/checkpoint.pt --split val --out runs/edgetpu/val.json
  tdbnas eval --weights model.pt --arch mobiledet-edgetpu --data data/synth --resolution 160
"""

def resize_mode(text: str) -> str:
    from tdbnas.detection.data.transforms import RESIZE_MODES

    if text not in RESIZE_MODES:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(RESIZE_MODES)}")
    return text


def head_choice(text: str) -> str:
    if text != "auto":
        raise argparse.ArgumentTypeError("only 'auto' here; set other head settings in a --config file (head: {...})")
    return text


# Flags that map one-to-one onto TrainConfig fields: (flag, field, type, help).
TRAIN_FLAGS = (
    ("--arch", "arch", str, "registered name, architecture string or .json file"),
    ("--data", "data", str, "dataset root (images/<split>/, annotations/instances_<split>.json)"),
    ("--train-split", "train_split", str, "training split name (default train)"),
    ("--val-split", "val_split", str, "evaluation split name (default val; '' for none)"),
    ("--resolution", "resolution", positive_int, "square input size (default 160)"),
    ("--resize", "resize", resize_mode, "how images of other sizes fit the input: stretch (default) or letterbox"),
    ("--head", "head", head_choice, "auto: anchors fitted to the training boxes (default: MobileDets anchors)"),
    ("--width-multiplier", "width_multiplier", positive_float, "backbone width multiplier"),
    ("--epochs", "epochs", positive_float, "training length in epochs (default 15; more on sets under 2,000 images)"),
    ("--batch-size", "batch_size", positive_int, "images per step (per process)"),
    ("--lr", "lr", positive_float, "peak learning rate after warm-up"),
    ("--warmup-epochs", "warmup_epochs", float, "linear warm-up length"),
    ("--weight-decay", "weight_decay", float, "L2 on conv weights"),
    ("--seed", "seed", int, "seed for initialisation, order and augmentation"),
    ("--workers", "workers", int, "data-loading processes"),
    ("--threads", "threads", positive_int, "torch CPU threads"),
    ("--val-fraction", "val_fraction", float, "share of train held out when the data has no val split (0.1)"),
    ("--eval-every", "eval_every_epochs", float, "evaluate every N epochs (0: only at the end)"),
    ("--eval-images", "eval_images", positive_int, "evaluate on the first N images only"),
    ("--max-minutes", "max_minutes", positive_float, "stop after this much training time"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:1 ..."),
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train an SSDLite detector (checkpoints, resume, COCO eval)",
                            description="Train an SSDLite detector on a COCO-format dataset.",
                            epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="YAML/JSON file with training settings")
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory (resumed if it exists)")
    for flag, name, kind, text in TRAIN_FLAGS:
        parser.add_argument(flag, dest=name, type=kind, default=None, help=text)
    add_augmentation_flags(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_train)

    parser = sub.add_parser("eval", help="COCO mAP of a trained detector on a dataset split",
                            description="Evaluate a trained detector with pycocotools.",
                            epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, metavar="FILE", help="model.pt or checkpoint.pt")
    parser.add_argument("--arch", help="architecture (default: from the run's config.json)")
    parser.add_argument("--data", help="dataset root (default: from the run's config.json)")
    parser.add_argument("--split", default=None, help="split to score (default: the run's val split)")
    parser.add_argument("--resolution", type=positive_int, default=None, help="input size")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--max-images", type=positive_int, default=None, help="score the first N images only")
    parser.add_argument("--out", metavar="FILE", help="write metrics JSON here (default: beside the weights)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=run_eval)


def add_augmentation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strong-augmentation", action="store_true", default=None,
                        help="random crop, flips and photometric distortion (for a few hundred images)")
    parser.add_argument("--vertical-flip", action="store_true", default=None,
                        help="also flip upside down (aerial and microscope images)")


def settings_from(args: argparse.Namespace, names) -> dict[str, Any]:
    """--config FILE, then the flags of `names` that were given (and the augmentation switches)."""
    settings: dict[str, Any] = load_settings(args.config) if args.config else {}
    for name in [*names, "strong_augmentation", "vertical_flip"]:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if args.no_progress:
        settings["progress"] = False
    return settings


def load_settings(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of settings, read with safe loaders only."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
    return data


def run_train(args: argparse.Namespace) -> int:
    from tdbnas.detection.train import TrainConfig, train

    config = TrainConfig.from_dict(settings_from(args, [name for _, name, _, _ in TRAIN_FLAGS]))
    if not config.data:
        raise ValueError("no dataset: pass --data DIR (e.g. from `tdbnas data synth --out DIR`) or set 'data' "
                         "in --config")
    summary = train(config, args.out)
    metrics = summary.get("eval", {}).get("metrics")
    print(f"trained {summary['steps']} steps in {summary['train_seconds']:.0f} s -> {args.out}")
    if metrics:
        print(_metrics_table(metrics))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from tdbnas.detection.data import build_dataset
    from tdbnas.detection.evaluate import evaluate_model
    from tdbnas.detection.model import SSDLite
    from tdbnas.detection.train import TrainConfig, head_settings, load_weights
    from tdbnas.spaces import resolve_arch
    from tdbnas.spaces.atomic import write_json_atomic

    weights = Path(args.weights)
    run_config = _run_config(weights)
    arch_text = args.arch or run_config.get("arch")
    data = args.data or run_config.get("data")
    split = args.split or run_config.get("val_split") or "val"
    resolution = args.resolution or run_config.get("resolution") or 320
    if not arch_text or not data:
        raise ValueError(f"{weights} has no config.json beside it: pass --arch and --data")
    state = load_weights(weights)
    dataset = build_dataset(data, split, size=resolution, train=False, resize=run_config.get("resize", "stretch"))
    head = head_settings(TrainConfig(head=run_config.get("head") or {}), dataset.num_classes)
    model = SSDLite(resolve_arch(arch_text), num_classes=dataset.num_classes, head=head,
                    width_multiplier=run_config.get("width_multiplier", 1.0))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not fit {arch_text!r} with {dataset.num_classes} classes: "
                         f"{str(exc).splitlines()[0]}") from None
    result = evaluate_model(model, dataset, batch_size=args.batch_size, progress=not args.no_progress,
                            max_images=args.max_images)
    payload = {k: v for k, v in result.items() if k != "results"}
    payload.update(weights=str(weights), arch=arch_text, data=str(data), split=split)
    out = Path(args.out) if args.out else weights.parent / f"eval_{split}.json"
    write_json_atomic(out, payload)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(_metrics_table(payload["metrics"]))
        print(f"{payload['images']} images, {payload['detections']} detections -> {out}")
    return 0


def _run_config(weights: Path) -> dict[str, Any]:
    path = weights.parent / "config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def _metrics_table(metrics: dict[str, float]) -> str:
    return table(["metric", "value"], [(k, f"{v:.4f}") for k, v in metrics.items()], right=("value",))
