"""Anchor-to-ground-truth matching: the TF `argmax_matcher` of the MobileDets configs.

Each anchor takes the ground-truth box it overlaps most; it is a positive when that IoU is at
least 0.5 and background otherwise (matched and unmatched thresholds are both 0.5, so nothing
is ignored). With `force_match_for_each_row`, every ground-truth box also claims its own
best anchor even below the threshold, so small or oddly shaped objects always get trained.
"""

from __future__ import annotations

import torch

from tdbnas.detection.boxes import pairwise_iou

BACKGROUND = -1


def match_anchors(gt_boxes: torch.Tensor, anchor_boxes: torch.Tensor, threshold: float = 0.5,
                  force_match: bool = True) -> torch.Tensor:
    """Index of the matched ground truth for every anchor, or `BACKGROUND` (-1).

    gt_boxes [G, 4] and anchor_boxes [A, 4] are both corner boxes. Returns int64 [A].
    """
    num_anchors = anchor_boxes.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((num_anchors,), BACKGROUND, dtype=torch.long, device=anchor_boxes.device)
    iou = pairwise_iou(gt_boxes, anchor_boxes)  # [G, A]
    best_iou, matches = iou.max(dim=0)
    matches = torch.where(best_iou >= threshold, matches, torch.full_like(matches, BACKGROUND))
    if force_match:
        # As TF: each ground truth's best anchor is forced to it; when two ground truths pick
        # the same anchor, the first of them keeps it.
        num_gt = gt_boxes.shape[0]
        best_anchor = iou.argmax(dim=1)  # [G]
        forced = torch.full_like(matches, num_gt)
        forced.scatter_reduce_(0, best_anchor, torch.arange(num_gt, device=gt_boxes.device), reduce="amin")
        matches = torch.where(forced < num_gt, forced, matches)
    return matches
