"""SSD anchors, equivalent to the TF Object Detection API `ssd_anchor_generator`.

MobileDets use 6 layers, scales 0.2 .. 0.95, aspect ratios {1, 2, 1/2, 3, 1/3} and reduced
boxes on the lowest layer (reference §1.3). For layer i with scale s_i (and s_6 = 1.0):

  * layer 0 (reduced): (0.1, 1), (s_0, 2), (s_0, 1/2)                 -> 3 per location
  * layer i > 0: (s_i, a) for each aspect ratio a, then (sqrt(s_i * s_{i+1}), 1) -> 6

A box of scale s and aspect a has height s / sqrt(a) and width s * sqrt(a) (normalised to the
image; for non-square inputs TF shrinks the longer side by min(H, W) / side). Centres sit on
the grid of the map: (j + 0.5) / rows. Order: map by map, then row-major over (y, x), then the
box specs above in order; the predictors flatten their NHWC outputs the same way.

Anchors are numpy arrays in (y_center, x_center, height, width), the order the box coder and
`TFLite_Detection_PostProcess` take, so export bakes exactly these into the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tdbnas.spaces import ArchSpec, SSDLiteHead, as_hw


def layer_scales(num_layers: int, min_scale: float = 0.2, max_scale: float = 0.95) -> list[float]:
    """TF `create_ssd_anchors`: linear from min to max, plus 1.0 for the last interpolation."""
    if num_layers == 1:
        return [min_scale, 1.0]
    step = (max_scale - min_scale) / (num_layers - 1)
    return [min_scale + step * i for i in range(num_layers)] + [1.0]


def box_specs(head: SSDLiteHead, min_scale: float = 0.2, max_scale: float = 0.95,
              interpolated_aspect_ratio: float = 1.0) -> list[list[tuple[float, float]]]:
    """Per map, the (scale, aspect ratio) of each anchor at one location."""
    scales = layer_scales(head.num_maps, min_scale, max_scale)
    specs = []
    for index in range(head.num_maps):
        scale, next_scale = scales[index], scales[index + 1]
        if index == 0 and head.reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        layer = [(scale, ratio) for ratio in head.aspect_ratios]
        if interpolated_aspect_ratio > 0:
            layer.append((math.sqrt(scale * next_scale), interpolated_aspect_ratio))
        specs.append(layer)
    return specs


def anchor_shapes(specs: Sequence[tuple[float, float]], base_size: tuple[float, float] = (1.0, 1.0)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(heights, widths) of anchors of (scale, aspect ratio) `specs`, normalised to the image."""
    scales = np.array([s for s, _ in specs], dtype=np.float64)
    ratios = np.sqrt(np.array([a for _, a in specs], dtype=np.float64))
    return scales / ratios * base_size[0], scales * ratios * base_size[1]


def square_base(image_hw: tuple[int, int]) -> tuple[float, float]:
    """TF MultipleGridAnchorGenerator: a square anchor stays square in pixels on a non-square input."""
    short = min(image_hw)
    return short / image_hw[0], short / image_hw[1]


def grid_anchors(map_hw: tuple[int, int], specs: Sequence[tuple[float, float]],
                 base_size: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Anchors of one map, [rows * cols * len(specs), 4] as (yc, xc, h, w)."""
    rows, cols = map_hw
    heights, widths = anchor_shapes(specs, base_size)
    # TF's anchor stride is 1/rows with offset half a stride: centres at (j + 0.5) / rows.
    y_centers = (np.arange(rows, dtype=np.float64) + 0.5) / rows
    x_centers = (np.arange(cols, dtype=np.float64) + 0.5) / cols
    yc, xc, k = np.meshgrid(y_centers, x_centers, np.arange(len(specs)), indexing="ij")
    anchors = np.stack([yc, xc, heights[k], widths[k]], axis=-1)
    return anchors.reshape(-1, 4)


def ssd_anchors(head: SSDLiteHead, map_sizes: Sequence[tuple[int, int]], image_hw: tuple[int, int],
                *, min_scale: float | None = None, max_scale: float | None = None) -> np.ndarray:
    """All anchors for maps of the given sizes, [A, 4] float32 (yc, xc, h, w), normalised.

    The scales default to the head's (`min_scale`/`max_scale`, MobileDets: 0.2 and 0.95)."""
    min_scale = head.min_scale if min_scale is None else min_scale
    max_scale = head.max_scale if max_scale is None else max_scale
    if len(map_sizes) != head.num_maps:
        raise ValueError(f"the head predicts on {head.num_maps} maps, got {len(map_sizes)} map sizes")
    base = square_base(image_hw)
    specs = box_specs(head, min_scale, max_scale)
    per_map = [grid_anchors(tuple(hw), layer, base) for hw, layer in zip(map_sizes, specs)]
    anchors = np.concatenate(per_map, axis=0).astype(np.float32)
    if anchors.shape[0] != sum(h * w * n for (h, w), n in zip(map_sizes, head.anchors_per_location())):
        raise AssertionError("anchor count disagrees with the head's anchors per location")
    return anchors


def detector_anchors(arch: ArchSpec, resolution: int | Sequence[int], head: SSDLiteHead | None = None,
                     width_multiplier: float = 1.0) -> np.ndarray:
    """The anchors of an SSDLite detector on `arch` at `resolution`."""
    hw = as_hw(resolution)
    head = (head or SSDLiteHead()).resolve(arch)  # with a pyramid: one map per pyramid level
    maps = head.feature_maps(arch, hw, width_multiplier)
    return ssd_anchors(head, [m.hw for m in maps], hw, min_scale=head.min_scale, max_scale=head.max_scale)


def corners(anchors: np.ndarray) -> np.ndarray:
    """(yc, xc, h, w) -> (ymin, xmin, ymax, xmax)."""
    yc, xc, h, w = anchors.T
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
