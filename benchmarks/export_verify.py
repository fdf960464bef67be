"""Int8 TFLite vs float torch on a trained detector: COCO mAP of both on the val split, the ops
that are not int8, and how well the post-processed boxes agree.

The default checkpoint is the one `detection_train.py` leaves (MobileDet-EdgeTPU trained from
scratch on the built-in dataset at 160x160); the export is the user-facing one
(`tdbnas.export.pipeline.export_detector`: int8 input, TFLite_Detection_PostProcess op, 100
calibration images from the train split).

    python benchmarks/detection_train.py && python benchmarks/export_verify.py
    python benchmarks/export_verify.py --weights runs/x/model.pt --images 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

TARGET_AP_POINTS = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="benchmarks/.cache/runs/detection_train/model.pt",
                        help="model.pt of a training run (arch, data, head and resolution come from its config.json)")
    parser.add_argument("--images", type=int, default=None, help="val images scored (default: all)")
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/.cache/export_verify/detector.tflite")
    parser.add_argument("--name", default="export_verify")
    args = parser.parse_args()
    if not Path(args.weights).is_file():
        parser.error(f"{args.weights} does not exist: run `python benchmarks/detection_train.py` first, "
                     "or pass --weights")

    from tdbnas.export.pipeline import ExportSettings, export_detector

    # Data, resolution and head come from the run's config.json (export's own defaults).
    run = json.loads((Path(args.weights).parent / "config.json").read_text())
    report = export_detector(ExportSettings(arch=run["arch"], weights=args.weights, out=args.out, verify=True,
                                            verify_images=args.images, calibration_images=args.calibration_images))
    verify = report["verify"]
    torch_map, tflite_map = verify["torch"]["mAP"], verify["tflite"]["mAP"]
    gap_points = 100 * (tflite_map - torch_map)
    agreement = verify["box_agreement"]
    rows = "\n".join(f"| {key} | {verify['torch'][key]:.4f} | {verify['tflite'][key]:.4f} |"
                     for key in ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large")
                     if key in verify["torch"])
    markdown = (f"`{run['arch']}` at {report['settings']['resolution']}x{report['settings']['resolution']} "
                f"(weights `{args.weights}`), int8 input, {args.calibration_images} calibration images, "
                f"TFLite_Detection_PostProcess; {verify['images']} images of the `{verify['split']}` split, "
                "interpreter with 1 thread.\n\n"
                f"| metric | float torch | int8 TFLite |\n|---|---|---|\n{rows}\n\n"
                f"int8 - float: **{gap_points:+.2f} AP points** (target: within {TARGET_AP_POINTS:.1f}).  \n"
                f"Box agreement: {agreement['torch_detections_compared']} torch detections with score >= "
                f"{agreement['score_at_least']}; median IoU with the best TFLite box of the same class "
                f"{agreement['median_iou']:.3f}, share with IoU >= 0.9: {agreement['share_iou_at_least_0.9']:.3f}.  \n"
                f"Ops not int8 outside the post-processing: {report['non_int8_outside_postprocess'] or 'none'}; "
                f"all non-int8 ops: {report['non_int8_ops']}.  \n"
                f"Keras vs torch max abs difference: {report['keras_vs_torch_max_abs']}; conversion "
                f"{report['convert_seconds']:.1f} s; file {report['tflite']['bytes'] / 1e6:.2f} MB.  \n"
                f"Edge TPU (op table): {report['edgetpu']['summary']}\n")
    record = {k: v for k, v in report.items() if k != "metadata"}
    record["int8_minus_float_ap_points"] = gap_points
    json_path, _ = write_results(args.name, record, markdown)
    print(markdown)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
