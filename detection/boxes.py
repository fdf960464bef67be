"""Box arithmetic in torch: corner/centre conversion and pairwise IoU.

Boxes are normalised (ymin, xmin, ymax, xmax) unless a name says otherwise: the TF Object
Detection API order, which the TFLite detection post-processing also uses.
"""

from __future__ import annotations

import torch


def center_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(yc, xc, h, w) -> (ymin, xmin, ymax, xmax), any leading shape."""
    yc, xc, h, w = boxes.unbind(-1)
    return torch.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], dim=-1)


def corners_to_center(boxes: torch.Tensor) -> torch.Tensor:
    """(ymin, xmin, ymax, xmax) -> (yc, xc, h, w), any leading shape."""
    ymin, xmin, ymax, xmax = boxes.unbind(-1)
    return torch.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin], dim=-1)


def area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] -> [N, M] (0 where both are empty)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
