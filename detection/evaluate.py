"""COCO evaluation with pycocotools: our mAP is `COCOeval`'s own result, not a re-implementation.

Detections are converted to the COCO results format (absolute [x, y, w, h] in the original
image, mapped back through the input's `Frame` when the image was letterboxed; COCO category
ids) and scored by `COCOeval` against the dataset's ground truth.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# Names of COCOeval.stats in order (bbox): AP@[.5:.95], AP50, AP75, AP small/medium/large, AR...
STAT_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large",
              "AR_1", "AR_10", "AR_100", "AR_small", "AR_medium", "AR_large")


def to_coco_results(image_id: int, orig_size: tuple[int, int], boxes: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray, label_to_category_id: Sequence[int], frame=None) -> list[dict[str, Any]]:
    """One image's detections (ymin, xmin, ymax, xmax normalised to the network input) -> COCO
    result records in the original image; `frame` (`transforms.Frame`) maps input coordinates
    back to the image (None: the input is the stretched image)."""
    height, width = orig_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if frame is not None:
        boxes = frame.to_image(boxes)
    records = []
    for (ymin, xmin, ymax, xmax), score, label in zip(boxes, scores, labels):
        x, y = xmin * width, ymin * height
        records.append({"image_id": int(image_id), "category_id": int(label_to_category_id[int(label)]),
                        "bbox": [round(x, 3), round(y, 3), round((xmax - xmin) * width, 3),
                                 round((ymax - ymin) * height, 3)],
                        "score": round(float(score), 6)})
    return records


def coco_metrics(coco_gt, results: Sequence[dict[str, Any]], image_ids: Iterable[int] | None = None,
                 verbose: bool = False) -> dict[str, float]:
    """Run `COCOeval` (bbox) on result records; returns the 12 standard numbers by name."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_dt = coco_gt.loadRes(list(results))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if verbose:
        print(sink.getvalue(), end="")
    # COCOeval reports -1 where a size range has no ground truth; keep it, it is informative.
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}


def evaluate_model(model, dataset, *, batch_size: int = 32, postprocess_settings=None, workers: int = 0,
                   progress: bool = True, max_images: int | None = None) -> dict[str, Any]:
    """COCO mAP of a torch SSDLite on a dataset split (eval transforms, i.e. resize only)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from tdbnas.detection.data import collate_detection
    from tdbnas.detection.postprocess import Postprocessor, PostprocessSettings

    if max_images is not None and max_images < len(dataset):
        dataset_view = Subset(dataset, range(max_images))
    else:
        dataset_view = dataset
    loader = DataLoader(dataset_view, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_detection)
    device = next(model.parameters()).device
    resolution = None
    postprocessor = None
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        iterator = _progress(loader, progress, "eval")
        with torch.no_grad():
            for images, targets in iterator:
                if postprocessor is None:
                    resolution = tuple(images.shape[-2:])
                    postprocessor = Postprocessor(model.anchors(resolution), model.head_spec.background_class,
                                                  postprocess_settings or PostprocessSettings())
                box_deltas, class_logits = model(images.to(device))
                for target, dets in zip(targets, postprocessor(box_deltas, class_logits)):
                    image_ids.append(int(target["image_id"]))
                    results += to_coco_results(target["image_id"], target["orig_size"], dets.boxes.cpu().numpy(),
                                               dets.scores.cpu().numpy(), dets.labels.cpu().numpy(),
                                               dataset.label_to_category_id, target.get("frame"))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    metrics = coco_metrics(dataset.coco, results, image_ids)
    return {"metrics": metrics, "images": len(image_ids), "detections": len(results),
            "resolution": list(resolution or ()), "seconds": round(seconds, 2), "results": results}


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="batch", leave=False)
