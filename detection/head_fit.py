"""Fitting the SSDLite head's anchors to a dataset's boxes (`--head auto`, `tdbnas data check`).

SSD learns a box from the anchors that overlap it at IoU >= 0.5 (the argmax matcher); a box
with no such anchor is only force-matched to its best anchor, a regression from a badly placed
box, and with small objects most of the ground truth ends up there. The share of boxes that do
have an anchor at IoU >= 0.5 -- "matched" here -- is computed exactly from the anchor grid: the
IoU of an anchor shape with a box only falls as their centres move apart along either axis, so
per map and anchor shape the best anchor is the one at the grid cell nearest the box's centre,
and a box's best IoU is the maximum over (map, shape) pairs (tested against all anchors).

The proposal searches the settings that place and shape the anchors, measuring each by the
matched share of the dataset's boxes at the input size:

  * `min_scale` and `max_scale` on log grids (the SSD scale rule, linear over the maps);
  * the aspect ratios: the head's, or fitted to the boxes (k-means on log(w/h), as many or fewer);
  * `reduce_boxes_in_lowest_layer` (3 anchors on the finest map, one a fixed 0.1 square, or all);
  * one finer backbone map in front (C3 before C4: half the grid spacing), for small objects;

and keeps the cheapest setting (fewest anchors) within `TOLERANCE` of the best share.

Why not YOLO's autoanchor (k-means on IoU of box shapes): it fits shapes and ignores where the
anchors sit, while an SSD scale belongs to one map whose grid spacing decides whether a small
box finds an anchor centred close enough. `benchmarks/small_objects.py` measures both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from tdbnas.detection.anchors import anchor_shapes, box_specs, square_base
from tdbnas.spaces import ArchSpec, SSDLiteHead, as_hw

MATCH_IOU = 0.5
#: A costlier head (more anchors) is proposed only when it matches this much more of the boxes.
TOLERANCE = 0.02
#: Matched share below which `data check` looks for a larger input size.
ENOUGH_MATCHED = 0.9
#: Boxes the search measures on (a seeded sample; the reported shares use every box).
FIT_SAMPLE = 4000
MIN_SCALES = tuple(float(v) for v in np.geomspace(0.01, 0.6, 12))
MAX_SCALE_STEPS = 8
REFINE = np.geomspace(0.7, 1.4, 7)  # the finer grid around the best coarse point
#: Settings of `SSDLiteHead` a proposal records: those it fits, and the extra layers it keeps.
PROPOSAL_FIELDS = ("from_features", "extra_depths", "min_scale", "max_scale", "aspect_ratios",
                   "reduce_boxes_in_lowest_layer")


# ---- boxes as the detector sees them ------------------------------------------------------------------
def input_boxes(dataset, size: int | Sequence[int], resize_mode: str = "stretch") -> tuple[np.ndarray, np.ndarray]:
    """Every ground-truth box of a dataset (a `CocoDetection` or a view of one) in network-input
    coordinates -- (yc, xc, h, w) normalised, float64 [G, 4] -- and its label [G]."""
    from tdbnas.detection.data.transforms import input_frame

    hw = as_hw(size)
    base = getattr(dataset, "dataset", dataset)  # a DatasetView: its images of the full split
    indices = getattr(dataset, "indices", range(len(base.images)))
    corners, labels = [], []
    for index in indices:
        boxes, box_labels = base.targets[index]
        if len(boxes) == 0:
            continue
        record = base.images[index]
        frame = input_frame((record["height"], record["width"]), hw, resize_mode)
        corners.append(frame.to_input(boxes))
        labels.append(box_labels)
    if not corners:
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    c = np.concatenate(corners).astype(np.float64)
    boxes = np.stack([(c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2, c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]], 1)
    return boxes, np.concatenate(labels)


# ---- matching -------------------------------------------------------------------------------------
def best_anchor_iou(boxes: np.ndarray, head: SSDLiteHead, arch: ArchSpec, size: int | Sequence[int]) -> np.ndarray:
    """Per box (yc, xc, h, w normalised), the largest IoU with any anchor of `head` on `arch`."""
    hw = as_hw(size)
    head = head.resolve(arch)
    centres = _nearest_centres(boxes, [m.hw for m in head.feature_maps(arch, hw)])
    return _best_iou(boxes, centres, box_specs(head, head.min_scale, head.max_scale), square_base(hw))


def _nearest_centres(boxes: np.ndarray, map_sizes: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per map, the anchor centre nearest each box's centre, per axis: (j + 0.5) / rows."""
    centres = []
    for rows, cols in map_sizes:
        cy = (np.clip(np.floor(boxes[:, 0] * rows), 0, rows - 1) + 0.5) / rows
        cx = (np.clip(np.floor(boxes[:, 1] * cols), 0, cols - 1) + 0.5) / cols
        centres.append((cy[:, None], cx[:, None]))
    return centres


def _best_iou(boxes: np.ndarray, centres, specs, base: tuple[float, float]) -> np.ndarray:
    y0, y1 = (boxes[:, 0] - boxes[:, 2] / 2)[:, None], (boxes[:, 0] + boxes[:, 2] / 2)[:, None]
    x0, x1 = (boxes[:, 1] - boxes[:, 3] / 2)[:, None], (boxes[:, 1] + boxes[:, 3] / 2)[:, None]
    area = (boxes[:, 2] * boxes[:, 3])[:, None]
    best = np.zeros(len(boxes))
    for (cy, cx), layer in zip(centres, specs):
        heights, widths = anchor_shapes(layer, base)
        overlap_y = np.minimum(cy + heights / 2, y1) - np.maximum(cy - heights / 2, y0)
        overlap_x = np.minimum(cx + widths / 2, x1) - np.maximum(cx - widths / 2, x0)
        inter = np.clip(overlap_y, 0, None) * np.clip(overlap_x, 0, None)
        best = np.maximum(best, (inter / (heights * widths + area - inter)).max(axis=1))
    return best


def matched_share(boxes: np.ndarray, head: SSDLiteHead, arch: ArchSpec, size: int | Sequence[int]) -> float:
    """Share of the boxes with an anchor at IoU >= 0.5."""
    if len(boxes) == 0:
        return 0.0
    return float(np.mean(best_anchor_iou(boxes, head, arch, size) >= MATCH_IOU))


# ---- the proposal ---------------------------------------------------------------------------------
@dataclass
class HeadProposal:
    """A fitted head: `settings` are the `SSDLiteHead` fields to set (a `head` section)."""

    settings: dict[str, Any]
    matched: float               # share of the boxes with an anchor at IoU >= 0.5, proposed head
    current_matched: float       # ... with the head it was fitted from
    anchors: int                 # anchor count of the proposed head at `resolution`
    current_anchors: int
    resolution: list[int]
    boxes: int
    options: list[dict[str, Any]] = field(default_factory=list)  # every structure tried, best scales each

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fitted_aspect_ratios(boxes: np.ndarray, count: int, size: int | Sequence[int]) -> tuple[float, ...]:
    """`count` or fewer aspect ratios (width / height in pixels) at the centres of a 1-D k-means
    on log(w/h), rounded to 2 decimals; 1.0 when the boxes are (nearly) all square."""
    hw = as_hw(size)
    logs = np.log(np.clip(boxes[:, 3] * hw[1], 1e-6, None) / np.clip(boxes[:, 2] * hw[0], 1e-6, None))
    if len(logs) == 0:
        return (1.0,)
    centres = np.quantile(logs, (np.arange(count) + 0.5) / count)
    for _ in range(50):
        assignment = np.abs(logs[:, None] - centres[None]).argmin(axis=1)
        updated = np.array([logs[assignment == k].mean() if (assignment == k).any() else centres[k]
                            for k in range(count)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return tuple(sorted({round(float(np.exp(c)), 2) for c in centres}))


def _scale_search(boxes: np.ndarray, head: SSDLiteHead, arch: ArchSpec, hw: tuple[int, int]
                  ) -> tuple[float, SSDLiteHead]:
    """The (min_scale, max_scale) that matches most boxes (ties: larger mean IoU): a log grid,
    then a finer one around its best point."""
    resolved = head.resolve(arch)
    centres = _nearest_centres(boxes, [m.hw for m in resolved.feature_maps(arch, hw)])
    base = square_base(hw)

    def score(low: float, high: float) -> tuple[float, float]:
        iou = _best_iou(boxes, centres, box_specs(resolved, low, high), base)
        return float(np.mean(iou >= MATCH_IOU)), float(iou.mean())

    grid = [(low, float(high)) for low in MIN_SCALES for high in np.geomspace(low, max(low, 0.95), MAX_SCALE_STEPS)]
    best = max(grid, key=lambda pair: score(*pair))
    fine = [(low, high) for low in best[0] * REFINE for high in best[1] * REFINE if 0 < low <= high <= 1.0]
    low, high = max(fine + [best], key=lambda pair: score(*pair))
    fitted = replace(head, min_scale=round(float(low), 4), max_scale=round(float(high), 4))
    return score(fitted.min_scale, fitted.max_scale)[0], fitted


def _structures(head: SSDLiteHead, arch: ArchSpec) -> list[SSDLiteHead]:
    """The head as it is, without the lowest-layer reduction, and with one finer backbone map."""
    feature_lists = [head.from_features]
    first = head.from_features[0]
    pyramid = getattr(arch, "pyramid", None)
    if pyramid is None and first.startswith("C") and int(first[1:]) > 3:
        finer = f"C{int(first[1:]) - 1}"
        if any(info.name == finer for info in arch.features()):
            feature_lists.append((finer, *head.from_features))
    return [replace(head, from_features=features, reduce_boxes_in_lowest_layer=reduce)
            for features in feature_lists for reduce in (True, False)]


def propose_head(boxes: np.ndarray, head: SSDLiteHead, arch: ArchSpec, size: int | Sequence[int], *,
                 tolerance: float = TOLERANCE, seed: int = 0) -> HeadProposal:
    """Fit the anchors of `head` (on `arch`, at input `size`) to `boxes` (yc, xc, h, w normalised)."""
    hw = as_hw(size)
    if len(boxes) == 0:
        raise ValueError("the dataset has no boxes to fit the head's anchors to")
    sample = boxes
    if len(boxes) > FIT_SAMPLE:
        sample = boxes[np.sort(np.random.default_rng(seed).choice(len(boxes), FIT_SAMPLE, replace=False))]
    ratio_sets = [head.aspect_ratios, fitted_aspect_ratios(sample, len(head.aspect_ratios), hw)]
    options = []
    for structure in _structures(head, arch):
        for ratios in dict.fromkeys(ratio_sets):
            _, fitted = _scale_search(sample, replace(structure, aspect_ratios=ratios), arch, hw)
            options.append({"head": fitted, "matched": matched_share(boxes, fitted, arch, hw),
                            "anchors": fitted.num_anchors(arch, hw)})
    top = max(option["matched"] for option in options)
    chosen = min((o for o in options if o["matched"] >= top - tolerance), key=lambda o: (o["anchors"], -o["matched"]))
    return HeadProposal(settings=head_overrides(chosen["head"]), matched=chosen["matched"],
                        current_matched=matched_share(boxes, head, arch, hw), anchors=chosen["anchors"],
                        current_anchors=head.num_anchors(arch, hw), resolution=list(hw), boxes=len(boxes),
                        options=[{**head_overrides(o["head"]), "matched": round(o["matched"], 4),
                                  "anchors": o["anchors"]} for o in options])


def head_overrides(head: SSDLiteHead) -> dict[str, Any]:
    """The anchor-shaping fields of `head` as a `head` settings section (JSON/YAML-friendly lists)."""
    values = asdict(head)
    return {name: list(values[name]) if isinstance(values[name], tuple) else values[name] for name in PROPOSAL_FIELDS}


def suggest_resolution(boxes: np.ndarray, head: SSDLiteHead, arch: ArchSpec, resolution: int,
                       proposal: HeadProposal, *, steps: Sequence[float] = (1.5, 2.0)) -> dict[str, Any] | None:
    """When even the proposed head leaves more than 1 - ENOUGH_MATCHED of the boxes unmatched:
    the smallest larger input size (a multiple of 32, up to 2x) whose own proposal matches
    ENOUGH_MATCHED of them, else the one that matches most. None when the size is fine."""
    if proposal.matched >= ENOUGH_MATCHED:
        return None
    tried = []
    for step in steps:
        size = int(math.ceil(resolution * step / 32) * 32)
        fitted = propose_head(boxes, head, arch, size)
        tried.append({"resolution": size, "matched": round(fitted.matched, 4), "head": fitted.settings})
        if fitted.matched >= ENOUGH_MATCHED:
            break
    best = next((t for t in tried if t["matched"] >= ENOUGH_MATCHED), max(tried, key=lambda t: t["matched"]))
    if best["matched"] <= proposal.matched + TOLERANCE:
        return None
    return {**best, "current_resolution": resolution, "current_matched": round(proposal.matched, 4), "tried": tried}


# ---- statistics for `data check` ---------------------------------------------------------------------
def box_statistics(boxes: np.ndarray, labels: np.ndarray, class_names: Sequence[str], size: int | Sequence[int]
                   ) -> list[dict[str, Any]]:
    """Per class (and "all"): count, box side sqrt(w*h) and aspect w/h percentiles in input pixels,
    and the COCO size classes of the boxes at the input size (small < 32^2 <= medium < 96^2 px)."""
    hw = as_hw(size)
    heights, widths = boxes[:, 2] * hw[0], boxes[:, 3] * hw[1]
    side = np.sqrt(heights * widths)
    aspect = widths / np.maximum(heights, 1e-9)
    rows = []
    groups = [(name, labels == k) for k, name in enumerate(class_names)] + [("all", np.ones(len(boxes), bool))]
    for name, mask in groups:
        if not mask.any():
            rows.append({"class": name, "boxes": 0})
            continue
        area = side[mask] ** 2
        rows.append({"class": name, "boxes": int(mask.sum()),
                     "side_px": {q: round(float(np.percentile(side[mask], q)), 1) for q in (5, 50, 95)},
                     "aspect": {q: round(float(np.percentile(aspect[mask], q)), 2) for q in (5, 50, 95)},
                     "small": round(float(np.mean(area < 32 ** 2)), 3),
                     "medium": round(float(np.mean((area >= 32 ** 2) & (area < 96 ** 2))), 3),
                     "large": round(float(np.mean(area >= 96 ** 2)), 3)})
    return rows


def anchor_report(dataset, head: SSDLiteHead, arch: ArchSpec, resolution: int, resize_mode: str = "stretch"
                  ) -> dict[str, Any]:
    """What `tdbnas data check` says about a dataset's boxes at an input size: per-class
    statistics, the matched share of `head`, a fitted head, and a larger size or tiling when the
    objects are too small for any head at this one."""
    boxes, labels = input_boxes(dataset, resolution, resize_mode)
    report: dict[str, Any] = {"resolution": resolution, "resize": resize_mode,
                              "classes": box_statistics(boxes, labels, dataset.class_names, resolution),
                              "head": head_overrides(head), "matched": matched_share(boxes, head, arch, resolution),
                              "anchors": head.num_anchors(arch, resolution)}
    if len(boxes) == 0:
        return report
    proposal = propose_head(boxes, head, arch, resolution)
    report["proposal"] = proposal.to_json()
    report["resolution_suggestion"] = suggest_resolution(boxes, head, arch, resolution, proposal)
    sides = np.array([max(image["height"], image["width"]) for image in getattr(dataset, "images", [])])
    if len(sides) and np.median(sides) >= 2 * resolution and proposal.matched < ENOUGH_MATCHED:
        report["tiling"] = {"median_long_side": int(np.median(sides)), "size": resolution}
    return report
