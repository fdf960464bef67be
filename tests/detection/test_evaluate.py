"""The evaluator is pycocotools: conversions to COCO results, and metrics equal COCOeval's own."""

import contextlib
import io
import json

import numpy as np
import pytest

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from tdbnas.detection.evaluate import coco_metrics, to_coco_results  # noqa: E402


def _ground_truth(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 100} for i in (1, 2, 3)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 50, 40], "area": 2000, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [100, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 120, 90], "area": 10800, "iscrowd": 0},
    ]  # image 3 is background only
    cats = [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_normalised_boxes_become_absolute_xywh_with_category_ids():
    # ymin 0.2, xmin 0.05, ymax 0.6, xmax 0.3 on a 100x200 (HxW) image -> x 10, y 20, w 50, h 40.
    records = to_coco_results(1, (100, 200), np.array([[0.2, 0.05, 0.6, 0.3]]), np.array([0.9]), np.array([0]),
                              label_to_category_id=[7, 9])
    assert records == [{"image_id": 1, "category_id": 7, "bbox": [10.0, 20.0, 50.0, 40.0], "score": 0.9}]


def test_perfect_detections_score_one(tmp_path):
    coco = _ground_truth(tmp_path)
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco.dataset["annotations"]]
    metrics = coco_metrics(coco, results)
    assert metrics["mAP"] == pytest.approx(1.0)
    assert metrics["mAP_50"] == pytest.approx(1.0)


def test_metrics_equal_cocoeval_run_directly(tmp_path):
    coco = _ground_truth(tmp_path)
    rng = np.random.default_rng(0)
    results = []
    for a in coco.dataset["annotations"]:
        for _ in range(3):
            x, y, w, h = np.array(a["bbox"]) + rng.normal(0, 4, 4)
            results.append({"image_id": a["image_id"], "category_id": a["category_id"],
                            "bbox": [float(x), float(y), float(abs(w)), float(abs(h))], "score": float(rng.random())})
    results.append({"image_id": 3, "category_id": 9, "bbox": [5, 5, 20, 20], "score": 0.99})  # a false positive
    ours = coco_metrics(coco, results)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert list(ours.values()) == pytest.approx(list(evaluator.stats))
    assert 0 < ours["mAP"] < 1


def test_no_detections_is_zero_not_an_error(tmp_path):
    assert coco_metrics(_ground_truth(tmp_path), [])["mAP"] == 0.0
