"""SSD training loss as in the MobileDets configs.

Classification: sigmoid focal loss (alpha 0.75, gamma 2) on every anchor and every class slot.
With a background slot (`encode_background_as_zeros`), slot 0 is always trained towards 0 and
class k lives in slot k + 1, which is the layout `TFLite_Detection_PostProcess` expects.
Localisation: smooth L1 (Huber, delta 1) on the box codes of matched anchors.
Both are summed over the batch and divided by the number of matched anchors (at least 1); the
box loss also by the code size (4), as `normalize_loc_loss_by_codesize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tdbnas.detection.box_coder import BoxCoder
from tdbnas.detection.boxes import center_to_corners
from tdbnas.detection.matcher import BACKGROUND, match_anchors


@dataclass(frozen=True)
class LossSettings:
    focal_alpha: float = 0.75
    focal_gamma: float = 2.0
    huber_delta: float = 1.0
    match_threshold: float = 0.5
    classification_weight: float = 1.0
    localization_weight: float = 1.0


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Per-entry focal loss (Lin et al.), the TF `SigmoidFocalClassificationLoss` formula."""
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = targets * p + (1 - targets) * (1 - p)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    return alpha_t * (1 - p_t).pow(gamma) * cross_entropy


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, num_matches: torch.Tensor,
                      beta: float = 2.0) -> torch.Tensor:
    """Quality focal loss (Li et al., GFL, NeurIPS 2020) of the student's class scores towards the
    teacher's sigmoid probabilities: |σ(t) − σ(s)|^β · BCE(s, σ(t)), summed over anchors and
    class slots and divided by the matches, as the focal loss is. Zero (with zero gradient) where
    the student agrees with the teacher; the in-place distillation of sandwich supernet training."""
    target = torch.sigmoid(teacher_logits.detach().float())
    student = student_logits.float()
    modulation = (target - torch.sigmoid(student)).abs().pow(beta)
    cross_entropy = F.binary_cross_entropy_with_logits(student, target, reduction="none")
    return (modulation * cross_entropy).sum() / num_matches.clamp(min=1).to(student.dtype)


class DetectionLoss(nn.Module):
    """Matches ground truth to anchors and computes the loss of one batch of raw predictions."""

    def __init__(self, anchors: np.ndarray | torch.Tensor, num_classes: int, background_class: bool = True,
                 settings: LossSettings = LossSettings()):
        super().__init__()
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("anchor_corners", center_to_corners(anchors), persistent=False)
        self.num_classes, self.background_class, self.settings = num_classes, background_class, settings
        self.coder = BoxCoder()

    @property
    def class_slots(self) -> int:
        return self.num_classes + int(self.background_class)

    def targets(self, boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per anchor: class slot of the match or -1 [N, A], and box codes [N, A, 4]."""
        slots, codes = [], []
        offset = int(self.background_class)
        for gt_boxes, gt_labels in zip(boxes, labels):
            if len(gt_boxes) == 0:  # background-only image: every anchor is a negative
                slots.append(torch.full(self.anchors.shape[:1], -1, dtype=torch.long, device=self.anchors.device))
                codes.append(torch.zeros_like(self.anchors))
                continue
            gt_boxes = gt_boxes.to(self.anchors.device, torch.float32)
            gt_labels = gt_labels.to(self.anchors.device, torch.long)
            matches = match_anchors(gt_boxes, self.anchor_corners, self.settings.match_threshold)
            index = matches.clamp(min=0)
            slots.append(torch.where(matches != BACKGROUND, gt_labels[index] + offset, -1))
            codes.append(self.coder.encode(gt_boxes[index], self.anchors))
        return torch.stack(slots), torch.stack(codes)

    def forward(self, box_deltas: torch.Tensor, class_logits: torch.Tensor, boxes: Sequence[torch.Tensor],
                labels: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        s = self.settings
        with torch.no_grad():
            slots, codes = self.targets(boxes, labels)
        positive = slots >= 0
        num_matches = positive.sum().clamp(min=1).to(box_deltas.dtype)
        one_hot = torch.zeros_like(class_logits, dtype=torch.float32)
        one_hot[positive] = F.one_hot(slots[positive], self.class_slots).float()
        cls = sigmoid_focal_loss(class_logits.float(), one_hot, s.focal_alpha, s.focal_gamma).sum() / num_matches
        box = F.huber_loss(box_deltas[positive].float(), codes[positive], delta=s.huber_delta, reduction="sum")
        box = box / num_matches / 4
        loss = s.classification_weight * cls + s.localization_weight * box
        return {"loss": loss, "classification": cls.detach(), "localization": box.detach(),
                "matches": positive.sum().detach()}
