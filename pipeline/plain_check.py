"""Does the exported detector find objects in a plain interpreter? (run as a script)

Imports only the TFLite interpreter (ai_edge_litert, else tflite_runtime), numpy and Pillow,
never tdbnas, torch or TensorFlow: what a deployment has. Reads the model's own contract (input
quantization from the model, TFLite_Detection_PostProcess outputs; the pre-processing -- stretch
or letterbox -- from the export report beside it, `<model>.json`, as an app would), runs COCO
val images through it and prints one JSON line: how many ground-truth objects were found by a
detection of the same class with IoU >= 0.5 and score >= the threshold (with --samples N, also
the detections of the first N images).

    python plain_check.py --model m.tflite --annotations instances_val.json --images images/val
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def preprocessing(model: str) -> dict:
    """The export report's pre-processing note (`metadata.input.resize`); stretch without one."""
    report = Path(model).with_suffix(".json")
    if report.is_file():
        return json.loads(report.read_text()).get("metadata", {}).get("input", {}).get("resize", {"mode": "stretch"})
    return {"mode": "stretch"}


def fit(image: Image.Image, height: int, width: int, note: dict) -> tuple[np.ndarray, tuple[float, ...]]:
    """The input pixels and (scale_y, scale_x, top, left), normalised: input = image * scale + offset."""
    if note.get("mode") != "letterbox":
        return np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float32), (1.0, 1.0, 0.0, 0.0)
    factor = min(height / image.height, width / image.width)
    h, w = max(1, min(height, round(image.height * factor))), max(1, min(width, round(image.width * factor)))
    top, left = (height - h) // 2, (width - w) // 2
    canvas = Image.new("RGB", (width, height), (note["pad_value"],) * 3)
    canvas.paste(image.resize((w, h), Image.BILINEAR), (left, top))
    return np.asarray(canvas, dtype=np.float32), (h / height, w / width, top / height, left / width)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--annotations", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--score", type=float, default=0.3)
    parser.add_argument("--samples", type=int, default=0,
                        help="also print the detections of the first N images (for the report's pictures)")
    args = parser.parse_args()

    interpreter = interpreter_class()(model_path=args.model, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    height, width = int(detail["shape"][1]), int(detail["shape"][2])
    outputs = interpreter.get_output_details()
    note = preprocessing(args.model)
    with open(args.annotations) as handle:
        data = json.load(handle)
    categories = sorted(c["id"] for c in data["categories"])
    label_of = {cid: label for label, cid in enumerate(categories)}
    by_image: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        if not annotation.get("iscrowd"):
            by_image.setdefault(annotation["image_id"], []).append(annotation)
    found = total = detections = 0
    samples = []
    for record in data["images"][:args.count]:
        pixels, (sy, sx, oy, ox) = fit(Image.open(f"{args.images}/{record['file_name']}").convert("RGB"), height,
                                       width, note)
        x = pixels * (2.0 / 255.0) - 1.0  # the detector's input normalisation
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        interpreter.set_tensor(detail["index"], x[None].astype(detail["dtype"]))
        interpreter.invoke()
        boxes, classes, scores, count = (interpreter.get_tensor(o["index"]) for o in outputs)
        n = int(count[0])
        keep = scores[0, :n] >= args.score
        boxes, classes = boxes[0, :n][keep], classes[0, :n][keep].astype(int)
        detections += int(keep.sum())
        if len(samples) < args.samples:
            samples.append({"file_name": record["file_name"], "boxes_yxyx": boxes.round(4).tolist(),
                            "labels": classes.tolist(), "scores": scores[0, :n][keep].round(3).tolist()})
        for annotation in by_image.get(record["id"], []):
            x0, y0, w, h = annotation["bbox"]
            truth = np.array([y0 / record["height"] * sy + oy, x0 / record["width"] * sx + ox,
                              (y0 + h) / record["height"] * sy + oy, (x0 + w) / record["width"] * sx + ox])
            same = classes == label_of[annotation["category_id"]]
            total += 1
            if same.any() and iou(truth, boxes[same]).max() >= 0.5:
                found += 1
    print(json.dumps({"images": min(args.count, len(data["images"])), "objects": total, "found": found,
                      "recall_at_iou_0.5": found / max(total, 1), "score_threshold": args.score,
                      "detections": detections, "samples": samples,
                      "modules": sorted(m for m in ("tdbnas", "torch", "tensorflow") if m in sys.modules)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
