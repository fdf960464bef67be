"""Detection post-processing: decode, sigmoid scores, per-class NMS, top detections.

The MobileDets eval configs: sigmoid scores, score threshold 1e-8, per-class NMS at IoU 0.6,
100 per class, 100 in total. torchvision's `batched_nms` is used when its compiled ops load;
otherwise an exact greedy NMS of our own (torchvision's CUDA wheels cannot load their ops
next to a CPU-only torch, which is the case on many CPU machines).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from tdbnas.detection.box_coder import BoxCoder


@dataclass(frozen=True)
class PostprocessSettings:
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    max_per_class: int = 100
    max_detections: int = 100
    # Candidates per class entering NMS, by score: bounds the work, and a box ranked below
    # this many of its own class would not survive to the top 100 anyway in practice.
    pre_nms_top_k: int = 300


@dataclass
class Detections:
    """Detections of one image: corner boxes normalised to the input (ymin, xmin, ymax, xmax),
    scores, and class labels (0-based, background excluded)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())


@functools.cache
def _torchvision_batched_nms():
    """torchvision's batched_nms if it imports and actually runs here, else None."""
    try:
        from torchvision.ops import batched_nms

        batched_nms(torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long), 0.5)
        return batched_nms
    except Exception:  # noqa: BLE001 - any failure (missing, broken CUDA ops) means "not usable"
        return None


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int | None = None
               ) -> torch.Tensor:
    """Indices of boxes kept by exact greedy NMS, by decreasing score.

    One iteration per *kept* box, each comparing it with the boxes still alive (numpy on the
    CPU: the per-iteration overhead of small torch ops dominated evaluation time); with
    `max_keep` it stops as soon as that many are kept.
    """
    device = boxes.device
    order = np.argsort(-scores.detach().cpu().numpy(), kind="stable")
    y0, x0, y1, x1 = np.ascontiguousarray(boxes.detach().cpu().double().numpy()[order].T)
    areas = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    limit = len(order) if max_keep is None else max_keep
    keep: list[int] = []
    alive = np.arange(len(order))
    while alive.size and len(keep) < limit:
        best, rest = alive[0], alive[1:]
        keep.append(int(best))
        height = np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest])
        width = np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest])
        inter = np.clip(height, 0, None) * np.clip(width, 0, None)
        union = areas[best] + areas[rest] - inter
        # IoU <= threshold, written without a division (0 where the union is empty, as pairwise_iou).
        alive = rest[(inter <= iou_threshold * union) | (union <= 0)]
    return torch.as_tensor(order[keep], dtype=torch.long, device=device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float,
                max_keep: int | None = None) -> torch.Tensor:
    """Per-class NMS over boxes of several classes (indices kept, by decreasing score).

    Boxes of different classes are shifted apart so that they never overlap, and one greedy
    pass suppresses within classes only (the torchvision trick); `max_keep` bounds the total.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    native = _torchvision_batched_nms()
    if native is not None:
        keep = native(boxes, scores, classes, iou_threshold)
        return keep if max_keep is None else keep[:max_keep]
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + (classes.to(boxes.dtype) * span)[:, None]
    return greedy_nms(shifted, scores, iou_threshold, max_keep)


class Postprocessor:
    """Raw predictions of a batch -> `Detections` per image."""

    def __init__(self, anchors: np.ndarray | torch.Tensor, background_class: bool = True,
                 settings: PostprocessSettings = PostprocessSettings()):
        self.anchors = torch.as_tensor(anchors, dtype=torch.float32)
        self.background_class, self.settings = background_class, settings
        self.coder = BoxCoder()

    @torch.no_grad()
    def __call__(self, box_deltas: torch.Tensor, class_logits: torch.Tensor) -> list[Detections]:
        anchors = self.anchors.to(box_deltas.device)
        boxes = self.coder.decode(box_deltas.float(), anchors)
        scores = torch.sigmoid(class_logits.float())
        if self.background_class:
            scores = scores[..., 1:]
        return [self._one(b, s) for b, s in zip(boxes, scores)]

    def _one(self, boxes: torch.Tensor, scores: torch.Tensor) -> Detections:
        s = self.settings
        num_anchors, num_classes = scores.shape
        k = min(s.pre_nms_top_k, num_anchors)
        top_scores, top_anchors = scores.topk(k, dim=0)  # [k, C] per class
        classes = torch.arange(num_classes, device=scores.device).expand(k, num_classes)
        top_scores, top_anchors, classes = top_scores.T.reshape(-1), top_anchors.T.reshape(-1), classes.T.reshape(-1)
        passing = top_scores > s.score_threshold
        top_scores, top_anchors, classes = top_scores[passing], top_anchors[passing], classes[passing]
        candidate_boxes = boxes[top_anchors]
        # The per-class limit only binds when it is below the total; otherwise stop at the total.
        max_keep = s.max_detections if s.max_per_class >= s.max_detections else None
        keep = batched_nms(candidate_boxes, top_scores, classes, s.iou_threshold, max_keep)
        keep = _limit_per_class(keep, classes, s.max_per_class)[: s.max_detections]
        return Detections(candidate_boxes[keep].clamp(0, 1), top_scores[keep], classes[keep])


def _limit_per_class(keep: torch.Tensor, classes: torch.Tensor, limit: int) -> torch.Tensor:
    """Keep at most `limit` of each class from `keep` (already sorted by decreasing score)."""
    kept_classes = classes[keep]
    one_hot = torch.nn.functional.one_hot(kept_classes, int(classes.max()) + 1 if classes.numel() else 1)
    rank = (one_hot.cumsum(0) * one_hot).sum(1)  # 1-based rank of each box within its class
    return keep[rank <= limit]
