"""`tdbnas data synth | check`: write the built-in synthetic dataset, check a COCO-format dataset."""

from __future__ import annotations

import argparse
import json
import warnings
from collections import Counter

from tdbnas.cli.common import positive_int, table
from tdbnas.cli.train import resize_mode

EPILOG = """\
`synth` writes the built-in dataset in COCO format (images/<split>/*.jpg,
annotations/instances_<split>.json) so training, evaluation and export read it exactly like
real data. It is deterministic per --seed; rerunning with the same settings reuses it.

`check` opens a COCO-format dataset split as training would (every record validated, every
image header read) and reports what it holds, what it had to skip, and what the data needs:
box sizes and aspect ratios per class at the input size, the share of boxes that have an
anchor at IoU >= 0.5 under the head (the defaults of `tdbnas train`, or --config FILE's), the
head `--head auto` would fit to them, and a larger input size or tiling when the objects are
too small for any head at this one.

`tile` cuts large images into overlapping tiles with their boxes (a new COCO dataset): a box
goes into every tile that holds at least --min-visible of it, clipped; every box lands in
some tile (boxes up to overlap * size pixels wholly inside one).

examples:
  tdbnas data synth --out data/synth                         2,000 train / 500 val, 160x160
  tdbnas data synth --out data/synth320 --image-size 320 --train 5000
  tdbnas data check data/synth --split val
  tdbnas data check /data/drone --resolution 320              anchors and sizes at 320x320
  tdbnas data check /data/coco --split val2017 --config my_run.yaml --json
  tdbnas data tile /data/drone --out data/drone320 --size 320 --overlap 0.1
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="built-in synthetic dataset; check or tile a COCO-format dataset",
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

    check = actions.add_parser("check", help="open a COCO-format split; sizes, anchors and a fitted head",
                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("root", metavar="DIR", help="dataset root")
    check.add_argument("--split", default="train")
    check.add_argument("--config", metavar="FILE", help="training settings (head, resolution, arch, resize) to check")
    check.add_argument("--resolution", type=positive_int, help="input size (default: --config's, else 160)")
    check.add_argument("--arch", help="architecture whose feature maps carry the anchors (default mobiledet-edgetpu)")
    check.add_argument("--resize", type=resize_mode, help="stretch (default) or letterbox")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=run_check)

    tile = actions.add_parser("tile", help="cut large images into overlapping tiles (a new COCO dataset)",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    tile.add_argument("root", metavar="DIR", help="dataset root")
    tile.add_argument("--out", required=True, metavar="DIR", help="directory of the tiled dataset")
    tile.add_argument("--size", type=positive_int, default=320, help="tile side in pixels (default 320)")
    tile.add_argument("--overlap", type=float, default=0.1, help="share of a tile its neighbours overlap (0.1)")
    tile.add_argument("--min-visible", type=float, default=0.5,
                      help="keep a box in a tile holding at least this share of it (default 0.5)")
    tile.add_argument("--split", action="append", metavar="S", help="split(s) to tile (default: every split)")
    tile.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    tile.add_argument("--no-progress", action="store_true")
    tile.set_defaults(handler=run_tile)


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
    from tdbnas.cli.train import load_settings
    from tdbnas.detection.data import build_dataset
    from tdbnas.detection.head_fit import anchor_report
    from tdbnas.detection.train import TrainConfig, head_settings
    from tdbnas.spaces import resolve_arch

    settings = load_settings(args.config) if args.config else {}
    config = TrainConfig.from_dict({k: v for k, v in settings.items()
                                    if k in ("head", "resolution", "arch", "resize")})
    resolution = args.resolution or config.resolution
    resize = args.resize or config.resize
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(args.root, args.split, size=resolution, resize=resize)
    dataset.check_images()
    objects = Counter(int(label) for _, labels in dataset.targets for label in labels)
    background = sum(1 for boxes, _ in dataset.targets if len(boxes) == 0)
    head = head_settings(config if config.head != "auto" else TrainConfig(), dataset.num_classes)
    anchors = anchor_report(dataset, head, resolve_arch(args.arch or config.arch), resolution, resize)
    summary = {"annotations": str(dataset.annotation_file), "images": len(dataset), "background_only": background,
               "objects": sum(objects.values()), "classes": dataset.num_classes,
               "sizes": dict(Counter(_size_class(box, image)
                                     for (boxes, _), image in zip(dataset.targets, dataset.images) for box in boxes)),
               "image_sizes": _image_sizes(dataset.images), "skipped": dict(dataset.skipped),
               "clipped": dataset.clipped, "per_class": {dataset.class_names[k]: n for k, n in sorted(objects.items())},
               "warnings": [str(w.message) for w in caught], "anchors": anchors}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['annotations']}: {summary['images']} images ({background} background-only), "
          f"{summary['objects']} objects in {summary['classes']} classes")
    print(f"image sizes (w x h): {summary['image_sizes']}")
    print("sizes (COCO ranges of the box area in original pixels): "
          + ", ".join(f"{k} {v}" for k, v in sorted(summary["sizes"].items())))
    for message in summary["warnings"]:
        print(f"warning: {message}")
    print()
    for line in anchor_lines(anchors):
        print(line)
    return 0


def anchor_lines(report: dict) -> list[str]:
    """The box statistics, matched shares, proposal and suggestions of `head_fit.anchor_report`."""
    size = report["resolution"]
    rows = [(r["class"], r["boxes"], *(("-",) * 3 if not r["boxes"] else (
             "/".join(f"{v:g}" for v in r["side_px"].values()), "/".join(f"{v:g}" for v in r["aspect"].values()),
             f"{r['small']:.0%}/{r['medium']:.0%}/{r['large']:.0%}"))) for r in report["classes"]]
    lines = [f"boxes at the {size}x{size} input ({report['resize']}):",
             table(["class", "boxes", "side px p5/p50/p95", "aspect w/h p5/p50/p95", "small/medium/large"], rows,
                   right=("boxes",)),
             "",
             f"current head ({_describe(report['head'])}; {report['anchors']} anchors): {report['matched']:.1%} of "
             "the boxes have an anchor at IoU >= 0.5"]
    proposal = report.get("proposal")
    if proposal:
        lines += [f"fitted head (--head auto): {_describe(proposal['settings'])}; {proposal['anchors']} anchors: "
                  f"{proposal['matched']:.1%} matched",
                  "  as a settings file: head: " + json.dumps(proposal["settings"])]
    suggestion = report.get("resolution_suggestion")
    if suggestion:
        lines.append(f"objects too small for {size}x{size}: at --resolution {suggestion['resolution']} a fitted head "
                     f"matches {suggestion['matched']:.1%} (vs {suggestion['current_matched']:.1%})")
    if report.get("tiling"):
        lines.append(f"images are large (median long side {report['tiling']['median_long_side']} px): tiling keeps "
                     f"their pixels, e.g. tdbnas data tile DIR --out DIR_tiles --size {size} --overlap 0.1")
    return lines


def _describe(head: dict) -> str:
    extra = f" + {len(head['extra_depths'])} extra" if head["extra_depths"] else ""
    return (f"maps {'+'.join(head['from_features'])}{extra}, scales {head['min_scale']:g}-{head['max_scale']:g}, "
            "aspect ratios " + "/".join(f"{a:.3g}" for a in head["aspect_ratios"])
            + ("" if head["reduce_boxes_in_lowest_layer"] else ", full lowest layer"))


def run_tile(args: argparse.Namespace) -> int:
    from tdbnas.detection.data.tile import TileSettings, tile_dataset

    settings = TileSettings(size=args.size, overlap=args.overlap, min_visible=args.min_visible)
    counts = tile_dataset(args.root, args.out, settings, splits=args.split, overwrite=args.overwrite,
                          progress=not args.no_progress)
    for split, c in counts.items():
        print(f"{split}: {c['source_images']} images, {c['source_boxes']} boxes -> {c['tiles']} tiles "
              f"({c['background_tiles']} without boxes), {c['tile_boxes']} boxes ({c['boxes_cut']} cut by a tile "
              "border)")
    print(f"-> {args.out}")
    return 0


def _image_sizes(images: list[dict]) -> str:
    sizes = Counter((image["width"], image["height"]) for image in images)
    common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
    return common + (f", ... ({len(sizes)} sizes)" if len(sizes) > 3 else "")


def _size_class(box, image: dict) -> str:
    """COCOeval's area ranges, of the box area in original pixels: small < 32^2 <= medium < 96^2 <= large."""
    area = float((box[2] - box[0]) * image["height"] * (box[3] - box[1]) * image["width"])
    return "small" if area < 32 ** 2 else "medium" if area < 96 ** 2 else "large"
