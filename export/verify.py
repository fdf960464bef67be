"""Verification of an exported .tflite against the torch model it came from, on real images.

Both are scored by the same evaluator (pycocotools' COCOeval via `tdbnas.detection.evaluate`)
on the same images of a dataset split, so "int8 costs 0.4 AP" is a measured statement. The
post-processed boxes are also compared one by one: for each confident torch detection, the
best-overlapping exported detection of the same class and its IoU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Torch detections compared box by box: confident ones, at most this many per image.
MATCH_SCORE = 0.3
MATCH_TOP = 10


@dataclass
class TFLiteDetector:
    """Runs an exported detector (with or without the post-processing op) on float images."""

    path: Path
    threads: int = 1  # LiteRT 2.3's regular NMS is wrong with more threads (see detection_tflite)

    def __post_init__(self) -> None:
        from tdbnas.export.litert import make_interpreter

        self.interpreter = make_interpreter(self.path, threads=self.threads)
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.has_postprocess = len(self.outputs) == 4

    def raw(self, image_nhwc: np.ndarray) -> list[np.ndarray]:
        """Dequantized outputs for one float image [1, H, W, 3]."""
        detail = self.input
        x = image_nhwc.astype(np.float32)
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])
        self.interpreter.set_tensor(detail["index"], x)
        self.interpreter.invoke()
        results = []
        for out in self.outputs:
            y = self.interpreter.get_tensor(out["index"])
            if out["dtype"] != np.float32:
                scale, zero = out["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            results.append(y)
        return results


def _detections(detector: TFLiteDetector, image_nhwc: np.ndarray, postprocessor) -> tuple[np.ndarray, ...]:
    """(boxes, scores, labels) of one image from an exported model."""
    outputs = detector.raw(image_nhwc)
    if detector.has_postprocess:
        boxes, classes, scores, count = outputs
        n = int(count[0])
        # The op does not clip decoded boxes; the torch post-processor does (as apps do).
        return np.clip(boxes[0, :n], 0.0, 1.0), scores[0, :n], classes[0, :n].astype(np.int64)
    import torch

    deltas, logits = (torch.from_numpy(o) for o in outputs)
    dets = postprocessor(deltas, logits)[0]
    return dets.boxes.numpy(), dets.scores.numpy(), dets.labels.numpy()


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def verify(tflite_path: str | Path, torch_model, dataset, *, max_images: int | None = None, threads: int = 1,
           progress: bool = True) -> dict[str, Any]:
    """COCO metrics of the torch model and of the .tflite on the same images, and box agreement."""
    import torch
    from tqdm import tqdm

    from tdbnas.detection.evaluate import coco_metrics, to_coco_results
    from tdbnas.detection.postprocess import Postprocessor

    detector = TFLiteDetector(Path(tflite_path), threads)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    resolution = tuple(int(v) for v in detector.input["shape"][1:3])
    postprocessor = Postprocessor(torch_model.anchors(resolution), torch_model.head_spec.background_class)
    torch_model = torch_model.eval()
    torch_results: list[dict] = []
    tflite_results: list[dict] = []
    ious: list[float] = []
    image_ids = []
    for index in tqdm(range(count), desc="verify", unit="img", disable=not progress, leave=False):
        image, target = dataset[index]
        image_ids.append(int(target["image_id"]))
        with torch.no_grad():
            reference = postprocessor(*torch_model(image[None]))[0]
        ref = (reference.boxes.numpy(), reference.scores.numpy(), reference.labels.numpy())
        got = _detections(detector, image.permute(1, 2, 0)[None].numpy(), postprocessor)
        for records, (boxes, scores, labels) in ((torch_results, ref), (tflite_results, got)):
            records += to_coco_results(target["image_id"], target["orig_size"], boxes, scores, labels,
                                       dataset.label_to_category_id, target.get("frame"))
        confident = [i for i in range(min(MATCH_TOP, len(ref[1]))) if ref[1][i] >= MATCH_SCORE]
        for i in confident:
            same = got[2] == ref[2][i]
            ious.append(float(_iou(ref[0][i], got[0][same]).max()) if same.any() else 0.0)
    torch_metrics = coco_metrics(dataset.coco, torch_results, image_ids)
    tflite_metrics = coco_metrics(dataset.coco, tflite_results, image_ids)
    iou = np.array(ious)
    return {"images": count, "torch": torch_metrics, "tflite": tflite_metrics,
            "mAP_difference": tflite_metrics["mAP"] - torch_metrics["mAP"],
            "has_postprocess_op": detector.has_postprocess,
            "box_agreement": {"torch_detections_compared": len(iou), "score_at_least": MATCH_SCORE,
                              "median_iou": float(np.median(iou)) if len(iou) else None,
                              "share_iou_at_least_0.9": float(np.mean(iou >= 0.9)) if len(iou) else None}}
