"""Image and box augmentation for SSD training: horizontal flip, SSD random crop, square resize.

Boxes are normalised (ymin, xmin, ymax, xmax) float arrays in [0, 1]; images are uint8 HWC
numpy arrays. Every random choice comes from the `numpy.random.Generator` passed in, so a
seeded sample is augmented identically in a resumed or distributed run.

The crop follows the SSD paper and the TF Object Detection API `ssd_random_crop` (the MobileDets
configs): pick a minimum-IoU constraint from {none, 0.1, 0.3, 0.5, 0.7, 0.9} or keep the whole
image; sample patches of 10-100 % of the area with aspect ratio 0.5-2 until one overlaps some
ground-truth box at least that much; keep the boxes whose centres fall inside it, clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Input normalisation of the MobileDets configs: (2 / 255) * x - 1, i.e. [0, 255] -> [-1, 1].
INPUT_SCALE = 2.0 / 255.0
INPUT_OFFSET = -1.0


def normalize_image(image: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 CHW in [-1, 1], the detector's input."""
    return (image.astype(np.float32) * INPUT_SCALE + INPUT_OFFSET).transpose(2, 0, 1)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 HWC image to (height, width); boxes are normalised, so unchanged."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def horizontal_flip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flipped = boxes.copy()
    flipped[:, 1] = 1.0 - boxes[:, 3]
    flipped[:, 3] = 1.0 - boxes[:, 1]
    return np.ascontiguousarray(image[:, ::-1]), flipped


def box_iou(patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with each of `boxes` [G, 4] (corner format)."""
    top_left = np.maximum(patch[:2], boxes[:, :2])
    bottom_right = np.minimum(patch[2:], boxes[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    area_patch = (patch[2] - patch[0]) * (patch[3] - patch[1])
    area_boxes = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area_patch + area_boxes - inter, 1e-12)


@dataclass(frozen=True)
class CropSettings:
    min_ious: tuple[float | None, ...] = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9)  # None: keep the image
    min_area: float = 0.1
    max_area: float = 1.0
    min_aspect: float = 0.5
    max_aspect: float = 2.0
    trials: int = 50


def ssd_random_crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                    settings: CropSettings = CropSettings()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random patch satisfying a random minimum-IoU constraint; returns the crop and its boxes.

    With no ground truth (a background-only image) any sampled patch is accepted.
    """
    height, width = image.shape[:2]
    min_iou = settings.min_ious[rng.integers(len(settings.min_ious))]
    if min_iou is None:
        return image, boxes, labels
    for _ in range(settings.trials):
        area = rng.uniform(settings.min_area, settings.max_area)
        aspect = np.exp(rng.uniform(np.log(settings.min_aspect), np.log(settings.max_aspect)))
        patch_h, patch_w = np.sqrt(area / aspect), np.sqrt(area * aspect)  # normalised sizes
        if patch_h > 1 or patch_w > 1:
            continue
        top, left = rng.uniform(0, 1 - patch_h), rng.uniform(0, 1 - patch_w)
        patch = np.array([top, left, top + patch_h, left + patch_w])
        if len(boxes) == 0:
            return _apply_crop(image, boxes, labels, patch, height, width)
        if box_iou(patch, boxes).max() < min_iou:
            continue
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centers > patch[:2]) & (centers < patch[2:]), axis=1)
        if not inside.any():
            continue
        return _apply_crop(image, boxes[inside], labels[inside], patch, height, width)
    return image, boxes, labels


def _apply_crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, patch: np.ndarray, height: int,
                width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y0, x0 = int(round(patch[0] * height)), int(round(patch[1] * width))
    y1, x1 = max(y0 + 1, int(round(patch[2] * height))), max(x0 + 1, int(round(patch[3] * width)))
    crop = image[y0:y1, x0:x1]
    # Re-express boxes in the pixel-exact crop that was taken, then clip to it.
    offset = np.array([y0 / height, x0 / width] * 2)
    scale = np.array([(y1 - y0) / height, (x1 - x0) / width] * 2)
    new_boxes = np.clip((boxes - offset) / scale, 0.0, 1.0).astype(np.float32)
    keep = (new_boxes[:, 2] > new_boxes[:, 0]) & (new_boxes[:, 3] > new_boxes[:, 1])
    return crop, new_boxes[keep], labels[keep]


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation; `None` for evaluation (resize only)."""

    flip_probability: float = 0.5
    crop: CropSettings | None = CropSettings()


def prepare(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: tuple[int, int],
            augmentation: Augmentation | None, rng: np.random.Generator | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment (when training), resize to `size`, normalise: the detector's input and targets."""
    if augmentation is not None:
        rng = rng if rng is not None else np.random.default_rng()
        if augmentation.crop is not None:
            image, boxes, labels = ssd_random_crop(image, boxes, labels, rng, augmentation.crop)
        if rng.random() < augmentation.flip_probability:
            image, boxes = horizontal_flip(image, boxes)
    return normalize_image(resize(image, size)), boxes.astype(np.float32), labels.astype(np.int64)
