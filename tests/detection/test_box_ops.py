"""Box coder, matcher, loss and post-processing."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tdbnas.detection.box_coder import BoxCoder
from tdbnas.detection.boxes import center_to_corners, pairwise_iou
from tdbnas.detection.loss import DetectionLoss, sigmoid_focal_loss
from tdbnas.detection.matcher import BACKGROUND, match_anchors
from tdbnas.detection.postprocess import Postprocessor, PostprocessSettings, batched_nms, greedy_nms

pytestmark = pytest.mark.torch

# Size ratios stay below the decoder clamp (exp(t) <= 1000 / 16).
positive = st.floats(0.05, 1.0)
centre = st.floats(-0.5, 1.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(centre, centre, positive, positive), min_size=1, max_size=8),
       st.lists(st.tuples(centre, centre, positive, positive), min_size=1, max_size=8))
def test_encode_then_decode_is_the_identity(boxes, anchors):
    n = min(len(boxes), len(anchors))
    boxes = center_to_corners(torch.tensor(boxes[:n], dtype=torch.float64))
    anchors = torch.tensor(anchors[:n], dtype=torch.float64)
    coder = BoxCoder()
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-6, rtol=1e-6)


def test_codes_by_hand():
    # Anchor centred at (0.5, 0.5), 0.2 x 0.4; box centred at (0.52, 0.46), 0.1 x 0.8:
    # ty = 10 * 0.02 / 0.2 = 1.0, tx = 10 * -0.04 / 0.4 = -1.0, th = 5 ln(0.5), tw = 5 ln(2).
    anchor = torch.tensor([[0.5, 0.5, 0.2, 0.4]], dtype=torch.float64)
    box = center_to_corners(torch.tensor([[0.52, 0.46, 0.1, 0.8]], dtype=torch.float64))
    code = BoxCoder().encode(box, anchor)[0]
    torch.testing.assert_close(code, torch.tensor([1.0, -1.0, 5 * math.log(0.5), 5 * math.log(2.0)],
                                                  dtype=torch.float64), atol=1e-6, rtol=0)


def test_matcher_thresholds_and_forced_matches():
    anchors = torch.tensor([[0.0, 0.0, 0.5, 0.5],     # overlaps gt0 exactly
                            [0.5, 0.5, 1.0, 1.0],     # far from both
                            [0.0, 0.6, 0.3, 0.9],     # best anchor of the tiny gt1, IoU < 0.5
                            [0.0, 0.0, 0.45, 0.5]])   # IoU 0.9 with gt0
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.7, 0.1, 0.8]])
    matches = match_anchors(gt, anchors)
    assert matches.tolist() == [0, BACKGROUND, 1, 0]
    assert match_anchors(gt, anchors, force_match=False).tolist() == [0, BACKGROUND, BACKGROUND, 0]


def test_forced_match_goes_to_the_first_ground_truth_on_ties():
    anchors = torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]])
    gt = torch.tensor([[0.0, 0.0, 0.1, 0.1], [0.9, 0.9, 1.0, 1.0]])  # both prefer anchor 0
    assert match_anchors(gt, anchors).tolist()[0] == 0


def test_every_ground_truth_claims_its_best_anchor():
    rng = np.random.default_rng(0)
    from tdbnas.detection.anchors import corners, detector_anchors
    from tdbnas.spaces import get_reference

    anchors = torch.as_tensor(corners(detector_anchors(get_reference("mobiledet-edgetpu").arch, 160)))
    for _ in range(20):
        yx = rng.uniform(0, 0.9, size=(8, 2))
        hw = rng.uniform(0.02, 0.1, size=(8, 2))  # small boxes: most IoUs are below 0.5
        gt = torch.tensor(np.concatenate([yx, yx + hw], 1), dtype=torch.float32)
        matches = match_anchors(gt, anchors)
        best = pairwise_iou(gt, anchors).argmax(dim=1).tolist()
        for anchor in best:
            # The first ground truth that prefers an anchor owns it (TF's tie rule).
            assert matches[anchor] == best.index(anchor)


def test_focal_loss_by_hand():
    # p = sigmoid(0) = 0.5, target 1: CE = ln 2, (1 - p)^2 = 0.25, alpha 0.75 -> 0.75 * 0.25 * ln 2.
    value = sigmoid_focal_loss(torch.zeros(1), torch.ones(1), alpha=0.75, gamma=2.0)
    assert float(value) == pytest.approx(0.75 * 0.25 * math.log(2))
    # Target 0 weighs the negative with 1 - alpha.
    value = sigmoid_focal_loss(torch.zeros(1), torch.zeros(1), alpha=0.75, gamma=2.0)
    assert float(value) == pytest.approx(0.25 * 0.25 * math.log(2))


def test_loss_is_normalised_by_matches_and_zero_box_loss_for_perfect_codes():
    anchors = np.array([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], dtype=np.float32)
    loss = DetectionLoss(anchors, num_classes=3)
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5]])]
    labels = [torch.tensor([2])]
    slots, codes = loss.targets(gt, labels)
    assert slots.tolist() == [[3, -1]]  # class 2 lives in slot 3 behind the background slot
    out = loss(codes.clone(), torch.full((1, 2, 4), -20.0), gt, labels)
    assert float(out["localization"]) == pytest.approx(0.0, abs=1e-6)
    assert int(out["matches"]) == 1
    # A background-only image: no matches, the normaliser stays 1, and the loss is finite.
    empty = loss(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    assert torch.isfinite(empty["loss"]) and int(empty["matches"]) == 0


def test_greedy_nms_matches_a_reference_loop():
    g = torch.Generator().manual_seed(0)
    yx = torch.rand(200, 2, generator=g)
    boxes = torch.cat([yx, yx + 0.05 + 0.3 * torch.rand(200, 2, generator=g)], 1)
    scores = torch.rand(200, generator=g)
    iou = pairwise_iou(boxes, boxes)
    expected = []
    for i in scores.argsort(descending=True).tolist():
        if all(iou[i, j] <= 0.5 for j in expected):
            expected.append(i)
    assert greedy_nms(boxes, scores, 0.5).tolist() == expected


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.5)
    assert keep.tolist() == [0]


def test_postprocessor_decodes_drops_background_and_limits():
    anchors = np.array([[0.25, 0.25, 0.5, 0.5], [0.26, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], dtype=np.float32)
    logits = torch.full((1, 3, 3), -10.0)
    logits[0, 0, 2] = 3.0   # class 1, strongest
    logits[0, 1, 2] = 2.0   # same class, overlapping: suppressed
    logits[0, 2, 1] = 1.0   # class 0 elsewhere
    logits[0, :, 0] = 10.0  # background slot: must be ignored
    dets = Postprocessor(anchors, settings=PostprocessSettings(score_threshold=0.5))(torch.zeros(1, 3, 4), logits)[0]
    assert dets.labels.tolist() == [1, 0]
    torch.testing.assert_close(dets.boxes[0], torch.tensor([0.0, 0.0, 0.5, 0.5]))
    assert dets.scores[0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    limited = Postprocessor(anchors, settings=PostprocessSettings(score_threshold=0.5, max_detections=1))
    assert len(limited(torch.zeros(1, 3, 4), logits)[0]) == 1
