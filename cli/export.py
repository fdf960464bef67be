"""`tdbnas export`: a trained detector -> int8 (or float) TFLite with the detection post-processing
op, metadata, Edge TPU report, optional ONNX, optional verification against torch."""

from __future__ import annotations

import argparse
import json

from tdbnas.cli.common import positive_float, positive_int

EPILOG = """\
Writes OUT (.tflite) and OUT with .json (metadata, settings and every report); the metadata
(labels, input normalisation, anchors, architecture) is also embedded in the .tflite. With a
run directory's model.pt, --arch, --data and the resolution default to the run's config.json.
--verify runs the .tflite and the torch model on the val split and scores both with
pycocotools. The Edge TPU report uses the documented op table; edgetpu_compiler runs too when
it is on PATH.

examples:
  tdbnas export --weights runs/edgetpu/model.pt --out edgetpu.tflite --verify
  tdbnas export --arch mobiledet-edgetpu --weights model.pt --data data/synth --out m.tflite --int8
  tdbnas export --weights model.pt --out m.tflite --max-detections 10 --fast-nms     (mobile app settings)
  tdbnas export --weights model.pt --out raw.tflite --no-postprocess              (NMS on the host CPU)
  tdbnas export --weights model.pt --out m.tflite --float --onnx --onnx-int8
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a trained detector to int8 TFLite (and ONNX), verified",
                            description="Export a trained SSDLite detector for deployment.", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, metavar="FILE", help="model.pt or checkpoint.pt")
    parser.add_argument("--out", required=True, metavar="FILE.tflite")
    parser.add_argument("--arch", help="architecture (default: from the run's config.json)")
    parser.add_argument("--data", metavar="DIR", help="COCO-format dataset for calibration and --verify")
    parser.add_argument("--resolution", type=positive_int, help="square input size (default: the run's)")
    parser.add_argument("--num-classes", type=positive_int, help="class count (default: from --data)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--int8", dest="precision", action="store_const", const="int8",
                           help="full-integer int8 (default)")
    precision.add_argument("--float", dest="precision", action="store_const", const="float32", help="float32")
    parser.set_defaults(precision="int8")
    parser.add_argument("--input-type", choices=("int8", "uint8", "float32"), default="int8")
    parser.add_argument("--quantized-outputs", action="store_true", help="int8 raw outputs (with --no-postprocess)")
    parser.add_argument("--calibration-images", type=positive_int, default=100, metavar="N")
    parser.add_argument("--no-postprocess", action="store_true", help="raw box deltas and class logits")
    parser.add_argument("--max-detections", type=positive_int, default=100, metavar="N")
    parser.add_argument("--fast-nms", action="store_true", help="fast NMS (best class per box) instead of per-class")
    parser.add_argument("--score-threshold", type=float, default=1e-8, metavar="S")
    parser.add_argument("--iou-threshold", type=positive_float, default=0.6, metavar="T")
    parser.add_argument("--onnx", action="store_true", help="also write OUT.onnx, checked with ONNX Runtime")
    parser.add_argument("--onnx-int8", action="store_true", help="also ONNX Runtime static int8 (needs --onnx)")
    parser.add_argument("--verify", action="store_true", help="COCO mAP of .tflite vs torch on the val split")
    parser.add_argument("--verify-split", default="val")
    parser.add_argument("--verify-images", type=positive_int, metavar="N", help="score the first N images only")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tdbnas.export.detection_tflite import PostprocessOp
    from tdbnas.export.pipeline import ExportSettings, _run_config, export_detector

    if args.onnx_int8 and not args.onnx:
        raise ValueError("--onnx-int8 needs --onnx")
    if args.quantized_outputs and not args.no_postprocess:
        raise ValueError("--quantized-outputs applies to raw outputs: add --no-postprocess "
                         "(the post-processing op's outputs are float by definition)")
    from pathlib import Path

    arch = args.arch or _run_config(Path(args.weights)).get("arch")
    if not arch:
        raise ValueError(f"{args.weights} has no config.json beside it: pass --arch")
    op = PostprocessOp(max_detections=args.max_detections, detections_per_class=max(args.max_detections, 100),
                       use_regular_nms=not args.fast_nms, score_threshold=args.score_threshold,
                       iou_threshold=args.iou_threshold)
    settings = ExportSettings(arch=arch, weights=args.weights, out=args.out, data=args.data,
                              resolution=args.resolution, num_classes=args.num_classes, precision=args.precision,
                              input_type=args.input_type, output_type="int8" if args.quantized_outputs else "float32",
                              calibration_images=args.calibration_images, postprocess=not args.no_postprocess,
                              postprocess_op=op, onnx=args.onnx, onnx_int8=args.onnx_int8, verify=args.verify,
                              verify_split=args.verify_split, verify_images=args.verify_images,
                              progress=not args.no_progress)
    report = export_detector(settings)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"wrote {report['tflite']['path']} ({report['tflite']['bytes'] / 1e6:.2f} MB) in "
          f"{report['convert_seconds']:.1f} s; report -> {Path(args.out).with_suffix('.json')}")
    diff = report["keras_vs_torch_max_abs"]
    print(f"Keras vs torch (float): max |diff| deltas {diff['box_deltas']:.2e}, logits {diff['class_logits']:.2e}")
    outside = report["non_int8_outside_postprocess"]
    print("ops not int8 (besides the post-processing): " + (", ".join(outside) if outside else "none"))
    print(f"Edge TPU: {report['edgetpu']['summary']}")
    if "compiler" in report["edgetpu"]:
        compiler = report["edgetpu"]["compiler"]
        print(f"edgetpu_compiler: {compiler if isinstance(compiler, str) else 'compiled -> ' + compiler['compiled']}")
    if "onnx" in report:
        print(f"ONNX: {report['onnx']['path']} (ORT vs torch max |diff| "
              f"{max(report['onnx']['vs_torch'][k] for k in report['onnx']['vs_torch'] if k.endswith('max_abs')):.2e})")
    if "verify" in report:
        v = report["verify"]
        agreement = v["box_agreement"]
        print(f"verify on {v['split']} ({v['images']} images): mAP torch {v['torch']['mAP']:.4f}, tflite "
              f"{v['tflite']['mAP']:.4f} ({100 * v['mAP_difference']:+.2f} AP points; tflite small/medium/large "
              + "/".join(f"{v['tflite'][k]:.4f}" for k in ("mAP_small", "mAP_medium", "mAP_large")) + "); boxes: "
              f"{agreement['torch_detections_compared']} confident torch detections, median IoU "
              f"{agreement['median_iou'] if agreement['median_iou'] is not None else float('nan'):.3f}")
    return 0
