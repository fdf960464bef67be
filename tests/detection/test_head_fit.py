"""Fitting the head's anchors to the boxes: the exact matched share, and proposals on boxes of
known sizes."""

from dataclasses import replace

import numpy as np
import pytest

from tdbnas.detection.anchors import corners, detector_anchors
from tdbnas.detection.head_fit import (
    best_anchor_iou,
    box_statistics,
    fitted_aspect_ratios,
    matched_share,
    propose_head,
    suggest_resolution,
)
from tdbnas.spaces import SSDLiteHead, resolve_arch

ARCH = resolve_arch("mobiledet-edgetpu")
DEFAULT = SSDLiteHead(num_classes=1)


def _random_boxes(count, side_px, resolution, seed=0, aspect=(1.0, 1.0)):
    """(yc, xc, h, w) normalised: boxes of `side_px` (sqrt of area) anywhere inside the image."""
    rng = np.random.default_rng(seed)
    side = np.asarray(side_px if np.ndim(side_px) else np.full(count, side_px), dtype=float) / resolution
    ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1]), count))
    h, w = side / np.sqrt(ratio), side * np.sqrt(ratio)
    return np.stack([rng.uniform(h / 2, 1 - h / 2), rng.uniform(w / 2, 1 - w / 2), h, w], axis=1)


def _brute_force(boxes, head, resolution):
    anchors = corners(detector_anchors(ARCH, resolution, head)).astype(np.float64)
    gt = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 0] + boxes[:, 2] / 2,
                   boxes[:, 1] + boxes[:, 3] / 2], axis=1)
    top_left = np.maximum(gt[:, None, :2], anchors[None, :, :2])
    bottom_right = np.minimum(gt[:, None, 2:], anchors[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_gt = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    area_anchor = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    return (inter / (area_gt[:, None] + area_anchor[None] - inter)).max(axis=1)


@pytest.mark.parametrize("head,resolution", [
    (DEFAULT, 320),
    (replace(DEFAULT, from_features=("C3", "C4", "C5"), extra_depths=(512, 256, 256), min_scale=0.05), 160),
    (replace(DEFAULT, reduce_boxes_in_lowest_layer=False, aspect_ratios=(1.0, 1.6), max_scale=0.5), (192, 320)),
])
def test_nearest_cell_iou_equals_the_best_over_every_anchor(head, resolution):
    boxes = np.concatenate([_random_boxes(150, np.geomspace(4, 200, 150), 320, seed=1, aspect=(0.3, 3.0)),
                            _random_boxes(20, 40, 320, seed=2)])
    assert best_anchor_iou(boxes, head, ARCH, resolution) == pytest.approx(_brute_force(boxes, head, resolution),
                                                                           abs=1e-6)


def test_small_boxes_get_a_head_that_matches_them():
    # 12-px squares at 320: the default anchors (smallest 0.1 * 320 = 32 px, every 16 px) miss them.
    boxes = _random_boxes(600, 12, 320, seed=3)
    proposal = propose_head(boxes, DEFAULT, ARCH, 320)
    assert proposal.current_matched < 0.2 and proposal.matched > 0.75
    assert proposal.current_matched == pytest.approx(matched_share(boxes, DEFAULT, ARCH, 320))
    head = SSDLiteHead(**{**{k: tuple(v) if isinstance(v, list) else v for k, v in proposal.settings.items()},
                          "num_classes": 1})
    assert matched_share(boxes, head, ARCH, 320) == pytest.approx(proposal.matched)
    assert head.from_features[0] == "C3"  # a 16-px grid cannot centre an anchor close enough
    assert head.min_scale < 0.1 and proposal.anchors == head.num_anchors(ARCH, 320)
    assert max(o["matched"] for o in proposal.options) <= proposal.matched + 0.02


def test_boxes_the_default_head_already_matches_keep_its_cost():
    # 40-200 px boxes at 320 with COCO-like aspect ratios: the MobileDets anchors fit; no finer map.
    boxes = _random_boxes(500, np.geomspace(40, 200, 500), 320, seed=4, aspect=(0.5, 2.0))
    proposal = propose_head(boxes, DEFAULT, ARCH, 320)
    assert proposal.current_matched > 0.8
    assert proposal.settings["from_features"] == ["C4", "C5"] and proposal.anchors == proposal.current_anchors
    assert proposal.matched >= proposal.current_matched


def test_aspect_ratios_follow_the_boxes():
    wide = _random_boxes(200, 30, 320, seed=5, aspect=(1.9, 2.1))
    tall = _random_boxes(200, 30, 320, seed=6, aspect=(0.48, 0.52))
    ratios = fitted_aspect_ratios(np.concatenate([wide, tall]), 2, 320)
    assert ratios == pytest.approx((0.5, 2.0), abs=0.03)
    assert fitted_aspect_ratios(_random_boxes(50, 30, 320, seed=7), 5, 320) == (1.0,)


def test_tiny_objects_get_a_larger_resolution_suggested():
    boxes = _random_boxes(400, 6, 320, seed=8)  # 6-px objects: too small for any anchor grid at 320
    proposal = propose_head(boxes, DEFAULT, ARCH, 320)
    suggestion = suggest_resolution(boxes, DEFAULT, ARCH, 320, proposal)
    assert suggestion is not None and suggestion["resolution"] > 320
    assert suggestion["matched"] > proposal.matched
    fine = _random_boxes(300, 60, 320, seed=9)
    assert suggest_resolution(fine, DEFAULT, ARCH, 320, propose_head(fine, DEFAULT, ARCH, 320)) is None


def test_box_statistics_per_class_in_input_pixels():
    boxes = np.concatenate([_random_boxes(10, 16, 320), _random_boxes(10, 64, 320, aspect=(2.0, 2.0))])
    labels = np.array([0] * 10 + [1] * 10)
    rows = box_statistics(boxes, labels, ["dot", "bar", "none"], 320)
    dot, bar, none, total = rows
    assert dot["side_px"][50] == pytest.approx(16) and dot["small"] == 1.0
    assert bar["side_px"][50] == pytest.approx(64) and bar["aspect"][50] == pytest.approx(2.0) and bar["medium"] == 1.0
    assert none == {"class": "none", "boxes": 0} and total["boxes"] == 20
