"""The Faster R-CNN box coder in (y, x, h, w) order with scales 10/10/5/5.

This is the TF Object Detection API `faster_rcnn_box_coder` the MobileDets configs use and the
convention `TFLite_Detection_PostProcess` decodes with (`y_scale 10, x_scale 10, h_scale 5,
w_scale 5`), so raw model outputs mean the same thing in torch and in the exported model:

    t_y = 10 * (y - y_a) / h_a      t_h = 5 * log(h / h_a)
    t_x = 10 * (x - x_a) / w_a      t_w = 5 * log(w / w_a)
"""

from __future__ import annotations

import math

import torch

from tdbnas.detection.boxes import center_to_corners, corners_to_center

SCALES = (10.0, 10.0, 5.0, 5.0)
# TF adds this to heights and widths before dividing and taking logs (degenerate boxes).
EPSILON = 1e-8
# Decoding clamps t_h, t_w so an untrained model cannot overflow exp(); log(1000 / 16) as torchvision.
MAX_LOG_SCALE = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(self, scales: tuple[float, float, float, float] = SCALES):
        self.scales = scales

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Corner boxes [..., 4] matched to anchors (yc, xc, h, w) [..., 4] -> codes [..., 4]."""
        yc, xc, h, w = corners_to_center(boxes).unbind(-1)
        ya, xa, ha, wa = anchors.unbind(-1)
        ha, wa, h, w = ha + EPSILON, wa + EPSILON, h + EPSILON, w + EPSILON
        sy, sx, sh, sw = self.scales
        return torch.stack([sy * (yc - ya) / ha, sx * (xc - xa) / wa,
                            sh * torch.log(h / ha), sw * torch.log(w / wa)], dim=-1)

    def decode(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Codes [..., 4] relative to anchors (yc, xc, h, w) -> corner boxes [..., 4]."""
        ty, tx, th, tw = codes.unbind(-1)
        ya, xa, ha, wa = anchors.unbind(-1)
        sy, sx, sh, sw = self.scales
        h = torch.exp((th / sh).clamp(max=MAX_LOG_SCALE)) * ha
        w = torch.exp((tw / sw).clamp(max=MAX_LOG_SCALE)) * wa
        centers = torch.stack([ty / sy * ha + ya, tx / sx * wa + xa, h, w], dim=-1)
        return center_to_corners(centers)
