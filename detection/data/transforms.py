"""Image and box augmentation for SSD training (flips, SSD random crop, photometric distortion)
and the fit of an image of any size to the network input (stretch or letterbox).

Boxes are normalised (ymin, xmin, ymax, xmax) float arrays in [0, 1]; images are uint8 HWC
numpy arrays. Every random choice comes from the `numpy.random.Generator` passed in, so a
seeded sample is augmented identically in a resumed or distributed run.

Input fit (`resize`): `stretch` resizes the image to the input size (TF `fixed_shape_resizer`,
the MobileDets configs), so normalised boxes are unchanged; `letterbox` scales it to fit
while keeping its aspect ratio and pads the rest with `PAD_VALUE`. Both are described by a
`Frame` (normalised input coordinate = image coordinate * scale + offset), computed from the
rounded pixel sizes actually used, so boxes move exactly with the pixels and detections map
back to the original image exactly.

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


RESIZE_MODES = ("stretch", "letterbox")
# The letterbox bands: mid-grey, i.e. about 0 after the input normalisation.
PAD_VALUE = 128


@dataclass(frozen=True)
class Frame:
    """Where an image sits in the network input, per axis (y, x): normalised input coordinate =
    normalised image coordinate * scale + offset. Identity for `stretch`."""

    scale: tuple[float, float] = (1.0, 1.0)
    offset: tuple[float, float] = (0.0, 0.0)

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Corner boxes normalised to the image -> normalised to the network input."""
        scale, offset = np.array(self.scale * 2), np.array(self.offset * 2)
        return (np.asarray(boxes, dtype=np.float64) * scale + offset).astype(np.float32)

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Corner boxes normalised to the network input -> normalised to the image, clipped to it."""
        scale, offset = np.array(self.scale * 2), np.array(self.offset * 2)
        return np.clip((np.asarray(boxes, dtype=np.float64) - offset) / scale, 0.0, 1.0)


def letterbox_layout(image_hw: tuple[int, int], size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((content height, width), (top, left)) of an image letterboxed into `size`: scaled by the
    largest factor that fits, rounded to whole pixels, centred."""
    factor = min(size[0] / image_hw[0], size[1] / image_hw[1])
    content = (max(1, min(size[0], round(image_hw[0] * factor))), max(1, min(size[1], round(image_hw[1] * factor))))
    return content, ((size[0] - content[0]) // 2, (size[1] - content[1]) // 2)


def input_frame(image_hw: tuple[int, int], size: tuple[int, int], mode: str = "stretch") -> Frame:
    """The frame of an image of `image_hw` fitted into `size` by `mode`."""
    if mode == "stretch":
        return Frame()
    if mode != "letterbox":
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
    (height, width), (top, left) = letterbox_layout(image_hw, size)
    return Frame((height / size[0], width / size[1]), (top / size[0], left / size[1]))


def fit_to_input(image: np.ndarray, boxes: np.ndarray, size: tuple[int, int], mode: str = "stretch"
                 ) -> tuple[np.ndarray, np.ndarray, Frame]:
    """The image at the input size (stretched or letterboxed), its boxes in input coordinates
    and the frame that maps between them."""
    frame = input_frame(image.shape[:2], tuple(size), mode)
    if mode == "stretch":
        return resize(image, size), boxes, frame
    (height, width), (top, left) = letterbox_layout(image.shape[:2], tuple(size))
    canvas = np.full((size[0], size[1], image.shape[2]), PAD_VALUE, dtype=np.uint8)
    canvas[top:top + height, left:left + width] = resize(image, (height, width))
    return canvas, frame.to_input(boxes), frame


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


def vertical_flip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flipped = boxes.copy()
    flipped[:, 0] = 1.0 - boxes[:, 2]
    flipped[:, 2] = 1.0 - boxes[:, 0]
    return np.ascontiguousarray(image[::-1]), flipped


@dataclass(frozen=True)
class PhotometricSettings:
    """SSD's photometric distortion: each change applied with probability 1/2, in random order
    of contrast before or after the colour changes (Liu et al. 2016; TF `ssd_random_distort`)."""

    brightness: float = 32.0        # +- pixel levels
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: float = 18.0               # +- degrees


def photometric_distort(image: np.ndarray, rng: np.random.Generator,
                        settings: PhotometricSettings = PhotometricSettings()) -> np.ndarray:
    """Random brightness, contrast, saturation and hue of a uint8 RGB image (boxes unchanged)."""
    pixels = image.astype(np.float32)
    if rng.random() < 0.5:
        pixels += rng.uniform(-settings.brightness, settings.brightness)
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(*settings.contrast) if rng.random() < 0.5 else None
    if contrast is not None and contrast_first:
        pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
    if rng.random() < 0.5:
        grey = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pixels = grey[..., None] + (pixels - grey[..., None]) * rng.uniform(*settings.saturation)
    if rng.random() < 0.5:
        hsv = np.asarray(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("HSV")).copy()
        shift = int(round(rng.uniform(-settings.hue, settings.hue) / 360 * 256))
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 256
        pixels = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), dtype=np.float32)
    if contrast is not None and not contrast_first:
        pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
    return np.clip(pixels, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation; `None` for evaluation (input fit only)."""

    flip_probability: float = 0.5
    crop: CropSettings | None = CropSettings()
    vertical_flip_probability: float = 0.0  # aerial and microscope images have no "up"
    photometric: PhotometricSettings | None = None


def prepare(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: tuple[int, int],
            augmentation: Augmentation | None, rng: np.random.Generator | None, resize_mode: str = "stretch"
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Frame]:
    """Augment (when training), fit to `size` (`resize_mode`), normalise: the detector's input,
    its targets in input coordinates, and the frame mapping them back to the image."""
    if augmentation is not None:
        rng = rng if rng is not None else np.random.default_rng()
        if augmentation.photometric is not None:
            image = photometric_distort(image, rng, augmentation.photometric)
        if augmentation.crop is not None:
            image, boxes, labels = ssd_random_crop(image, boxes, labels, rng, augmentation.crop)
        if rng.random() < augmentation.flip_probability:
            image, boxes = horizontal_flip(image, boxes)
        if augmentation.vertical_flip_probability and rng.random() < augmentation.vertical_flip_probability:
            image, boxes = vertical_flip(image, boxes)
    image, boxes, frame = fit_to_input(image, boxes, size, resize_mode)
    return normalize_image(image), boxes.astype(np.float32), labels.astype(np.int64), frame
