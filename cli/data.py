"""`tdbnas data synth | check`: write the built-in synthetic dataset, check a COCO-format dataset."""

from __future__ import annotations

import argparse
import json
import warnings
from collections import Counter

from tdbnas.cli.common import positive_int, table

EPILOG = """\
`synth` writes the built-in dataset in COCO format (images/<split>/*.jpg,
annotations/instances_<split>.json) so training, evaluation and export read it exactly like
real data. It is deterministic per --seed; rerunning with the same settings reuses it.
`check` opens a COCO-format dataset split as training would and reports what it holds and
what it had to skip.

examples:
  tdbnas data synth --out data/synth                         2,000 train / 500 val, 160x160
  tdbnas data synth --out data/synth320 --image-size 320 --train 5000
  tdbnas data check data/synth --split val
  tdbnas data check /data/coco --split val2017
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="built-in synthetic dataset; check a COCO-format dataset",
                            description="Datasets for training and evaluation.", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    synth = actions.add_parser("synth", help="write the built-in synthetic dataset (COCO format)",
                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    synth.add_argument("--out", required=True, metavar="DIR", help="dataset directory to create")
    synth.add_argument("--train", type=positive_int, default=2000, help="training images (default 2000)")
    synth.add_argument("--val", type=int, default=500, help="validation images (default 500)")
    synth.add_argument("--image-size", type=positive_int, default=160, help="square image size (default 160)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--overwrite", action="store_true", help="replace a dataset made with other settings")
    synth.add_argument("--no-progress", action="store_true")
    synth.set_defaults(handler=run_synth)

    check = actions.add_parser("check", help="open a COCO-format split and summarise it")
    check.add_argument("root", metavar="DIR", help="dataset root")
    check.add_argument("--split", default="train")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=run_check)


def run_synth(args: argparse.Namespace) -> int:
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(num_train=args.train, num_val=args.val, image_size=args.image_size, seed=args.seed)
    out = write_synthetic_dataset(args.out, config, progress=not args.no_progress, overwrite=args.overwrite)
    for split in ("train", "val"):
        path = out / "annotations" / f"instances_{split}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} objects -> {path}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from tdbnas.detection.data import build_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(args.root, args.split, size=320)
    objects = Counter(int(label) for _, labels in dataset.targets for label in labels)
    sizes = Counter(_size_class(a) for a in dataset.coco.dataset["annotations"] if not a.get("iscrowd"))
    background = sum(1 for boxes, _ in dataset.targets if len(boxes) == 0)
    summary = {"annotations": str(dataset.annotation_file), "images": len(dataset), "background_only": background,
               "objects": sum(objects.values()), "classes": dataset.num_classes, "sizes": dict(sizes),
               "skipped": dict(dataset.skipped), "clipped": dataset.clipped,
               "per_class": {dataset.class_names[k]: n for k, n in sorted(objects.items())},
               "warnings": [str(w.message) for w in caught]}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['annotations']}: {summary['images']} images ({background} background-only), "
          f"{summary['objects']} objects in {summary['classes']} classes")
    print("sizes: " + ", ".join(f"{k} {v}" for k, v in sorted(sizes.items())))
    for message in summary["warnings"]:
        print(f"warning: {message}")
    print(table(["class", "objects"], list(summary["per_class"].items()), right=("objects",)))
    return 0


def _size_class(annotation: dict) -> str:
    """COCOeval's area ranges: small < 32^2 <= medium < 96^2 <= large."""
    area = annotation.get("area") or annotation["bbox"][2] * annotation["bbox"][3]
    return "small" if area < 32 ** 2 else "medium" if area < 96 ** 2 else "large"
