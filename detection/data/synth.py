"""The built-in synthetic detection dataset, written to disk in COCO format.

No dataset can be downloaded where tdbnas is tested, so it ships a generator whose output is
read by the same loader as real data (`CocoDetection`). It is meant to be hard in the ways that
matter for mobile detectors (small objects, clutter, occlusion), not a toy:

  * 6 shape classes (ellipse, rectangle, triangle, star, cross, ring), each drawn with a random
    aspect ratio (1:2 .. 2:1), rotation, colour and shading; the longer side of an object's box
    is uniform over 10-80 px, which makes about 40 % of the objects COCO "small" (< 32^2 px of
    area) and the rest "medium", close to COCO's own share of small objects (41 %);
  * 1-8 objects per image; later objects may cover up to half of an earlier one, and objects may
    be cut by the image border (at least half stays visible); boxes are the tight box of the
    visible pixels and `area` their count, as COCO segment areas;
  * textured backgrounds: a low-frequency colour field, stripes, line and arc clutter (some of it
    drawn over objects), JPEG compression and pixel noise.

Every image is a pure function of (seed, split, index), so the dataset is deterministic per seed
and can be generated in any order or in parallel. A finished dataset carries `synth.json`; asking
for the same settings again reuses it, different settings raise instead of silently mixing.

    tdbnas data synth --out data/synth                 # 2,000 train / 500 val images of 160x160
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tdbnas.spaces.atomic import write_json_atomic

CLASSES = ("ellipse", "rectangle", "triangle", "star", "cross", "ring")
FORMAT = "tdbnas.synth"
VERSION = 1
SUPERSAMPLE = 4  # shapes are rasterised at 4x and box-filtered down: anti-aliased edges
SPLIT_IDS = {"train": 1, "val": 2}


@dataclass(frozen=True)
class SynthConfig:
    num_train: int = 2000
    num_val: int = 500
    image_size: int = 160
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 8
    min_object_size: float = 10.0
    max_object_size: float = 80.0
    max_aspect: float = 2.0
    max_occluded_fraction: float = 0.5
    clutter_strokes: tuple[int, int] = (2, 10)
    noise_std: tuple[float, float] = (2.0, 10.0)
    jpeg_quality: int = 90
    classes: tuple[str, ...] = field(default=CLASSES)

    def __post_init__(self) -> None:
        problems = []
        if self.num_train < 1 or self.num_val < 0:
            problems.append(f"num_train must be >= 1 and num_val >= 0 (got {self.num_train}, {self.num_val})")
        if self.image_size < 32:
            problems.append(f"image_size must be at least 32 (got {self.image_size})")
        if not 1 <= self.min_objects <= self.max_objects:
            problems.append(f"need 1 <= min_objects <= max_objects (got {self.min_objects}, {self.max_objects})")
        if not 4 <= self.min_object_size <= self.max_object_size:
            problems.append(f"need 4 <= min_object_size <= max_object_size (got {self.min_object_size}, "
                            f"{self.max_object_size})")
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown or not self.classes:
            problems.append(f"unknown shape classes {unknown}; choose from {list(SHAPES)}")
        if problems:
            raise ValueError("invalid synthetic dataset settings: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


# ---- shapes: outlines in unit coordinates (a shape fills [-1, 1]^2 before scaling) ---------------
def _circle(points: int = 48) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(tips: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 2 * tips, endpoint=False) - np.pi / 2
    radii = np.where(np.arange(2 * tips) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                     [-1, -a], [-a, -a]], dtype=np.float64)


# Each shape: outer polygon and, for the ring, a hole.
SHAPES: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    "ellipse": (_circle(), None),
    "rectangle": (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64), None),
    "triangle": (np.array([[0, -1], [1, 0.8], [-1, 0.8]], dtype=np.float64), None),
    "star": (_star(), None),
    "cross": (_cross(), None),
    "ring": (_circle(), 0.55 * _circle()),
}


def _render_alpha(outline: np.ndarray, hole: np.ndarray | None, transform: Callable[[np.ndarray], np.ndarray],
                  size: int) -> np.ndarray:
    """Anti-aliased coverage [size, size] float32 of a transformed polygon (with optional hole)."""
    canvas = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon([tuple(p) for p in transform(outline) * SUPERSAMPLE], fill=255)
    if hole is not None:
        draw.polygon([tuple(p) for p in transform(hole) * SUPERSAMPLE], fill=0)
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


# ---- backgrounds and clutter ------------------------------------------------------------------
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour field + stripes: float32 HWC in [0, 255]."""
    grid = rng.integers(2, 6)
    coarse = rng.uniform(0, 255, (grid, grid, 3)).astype(np.uint8)
    field_ = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    base = rng.uniform(40, 215, 3).astype(np.float32)
    mix = rng.uniform(0.3, 0.8)
    image = base * (1 - mix) + field_ * mix
    if rng.random() < 0.6:  # stripes or a checker-like texture of random frequency and angle
        angle = rng.uniform(0, np.pi)
        frequency = rng.uniform(0.05, 0.5)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * frequency)
        image += (rng.uniform(8, 30) * wave)[..., None] * rng.uniform(0.5, 1.0, 3)
    return image


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, count: int) -> None:
    """Lines and arcs in random colours: edges that are not objects."""
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        width = int(rng.integers(1, 4))
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(-0.1 * size, 1.1 * size, 4))
        if rng.random() < 0.6:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=width)
        else:
            box = [min(x0, x1), min(y0, y1), max(x0, x1) + 4, max(y0, y1) + 4]
            start = float(rng.uniform(0, 360))
            draw.arc(box, start, start + float(rng.uniform(60, 270)), fill=colour, width=width)


def _object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour, re-drawn a few times if it would nearly vanish into the background."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(4):
        if np.abs(colour - background).mean() > 40:
            break
        colour = rng.uniform(0, 255, 3)
    return colour


# ---- one image ----------------------------------------------------------------------------------
@dataclass
class _Placed:
    label: int
    owner: int


def render_image(config: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image (uint8 HWC) and its objects: `{"label", "bbox" [x, y, w, h], "area"}`."""
    size = config.image_size
    image = _background(rng, size)
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    strokes = int(rng.integers(config.clutter_strokes[0], config.clutter_strokes[1] + 1))
    under = int(rng.integers(0, strokes + 1))
    _clutter(ImageDraw.Draw(canvas), rng, size, under)
    image = np.asarray(canvas, dtype=np.float32)

    owner = np.full((size, size), -1, dtype=np.int32)  # which object each pixel shows (-1: background)
    full_area: list[float] = []
    labels: list[int] = []
    wanted = int(rng.integers(config.min_objects, config.max_objects + 1))
    for _ in range(wanted):
        for _attempt in range(30):
            label = int(rng.integers(len(config.classes)))
            outline, hole = SHAPES[config.classes[label]]
            extent = rng.uniform(config.min_object_size, config.max_object_size)  # longer side of its box
            aspect = math.exp(rng.uniform(-math.log(config.max_aspect), math.log(config.max_aspect)))
            half = np.array([min(1.0, aspect), min(1.0, 1 / aspect)])
            angle = rng.uniform(0, 2 * np.pi)
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            # Scale so that the rotated shape's axis-aligned box has `extent` as its longer side.
            rotated = (outline * half) @ rotation.T
            half = half * extent / float((rotated.max(axis=0) - rotated.min(axis=0)).max())
            center = rng.uniform(0, size, 2)

            def transform(points, half=half, rotation=rotation, center=center):
                return (points * half) @ rotation.T + center

            alpha = _render_alpha(outline, hole, transform, size)
            mask = alpha >= 0.5
            visible_own = mask.sum()
            whole = _render_area(outline, hole, half)
            if visible_own < max(12, 0.5 * whole):  # mostly outside the image, or vanishingly small
                continue
            # The new object goes on top: every earlier object must keep enough of itself.
            covered = np.bincount(owner[mask & (owner >= 0)], minlength=len(labels))
            remaining = [(owner == k).sum() - covered[k] for k in range(len(labels))]
            if any(r < (1 - config.max_occluded_fraction) * full_area[k] for k, r in enumerate(remaining)):
                continue
            colour = _object_colour(rng, image[mask].mean(axis=0))
            shade = _shading(rng, size, transform)
            paint = colour[None, None, :] * shade[..., None]
            image = image * (1 - alpha[..., None]) + paint * alpha[..., None]
            owner[mask] = len(labels)
            labels.append(label)
            full_area.append(float(visible_own))
            break

    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    over = strokes - under
    _clutter(ImageDraw.Draw(canvas), rng, size, min(over, 2))  # a few strokes cross objects
    image = np.asarray(canvas, dtype=np.float32)
    image += rng.normal(0, rng.uniform(*config.noise_std), image.shape)
    objects = []
    for k, label in enumerate(labels):
        ys, xs = np.nonzero(owner == k)
        if len(ys) == 0:
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        objects.append({"label": label, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(len(ys))})
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _render_area(outline: np.ndarray, hole: np.ndarray | None, half: np.ndarray) -> float:
    """Pixel area of the whole shape (inside or outside the image): shoelace formula."""
    def polygon_area(points: np.ndarray) -> float:
        x, y = (points * half).T
        return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return polygon_area(outline) - (polygon_area(hole) if hole is not None else 0.0)


def _shading(rng: np.random.Generator, size: int, transform) -> np.ndarray:
    """A linear brightness ramp across the object (0.75 .. 1.25): objects are not flat stickers."""
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    center = transform(np.zeros((1, 2)))[0]
    span = max(float(np.abs(transform(np.array([[1.0, 1.0]]))[0] - center).max()), 1.0)
    ramp = ((xx - center[0]) * direction[0] + (yy - center[1]) * direction[1]) / span
    return np.clip(1.0 + rng.uniform(0.0, 0.25) * ramp, 0.6, 1.4).astype(np.float32)


# ---- writing a dataset --------------------------------------------------------------------------
def _image_rng(config: SynthConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, SPLIT_IDS[split], index])


def generate_split(config: SynthConfig, split: str, image_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Render and save every image of one split; return its COCO instances dict."""
    from tqdm import tqdm

    count = config.num_train if split == "train" else config.num_val
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(count), desc=f"synth {split}", unit="img", disable=not progress, leave=False):
        pixels, objects = render_image(config, _image_rng(config, split, index))
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        Image.fromarray(pixels).save(image_dir / file_name, quality=config.jpeg_quality)
        images.append({"id": image_id, "file_name": file_name, "width": config.image_size,
                       "height": config.image_size})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": obj["label"] + 1,
                                "bbox": obj["bbox"], "area": obj["area"], "iscrowd": 0})
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(config.classes)]
    return {"info": {"description": f"tdbnas synthetic shapes, {split}", "version": str(VERSION)},
            "images": images, "annotations": annotations, "categories": categories}


def write_synthetic_dataset(out: str | Path, config: SynthConfig = SynthConfig(), *, progress: bool = True,
                            overwrite: bool = False) -> Path:
    """Write (or reuse) the dataset under `out`: images/{train,val}/, annotations/instances_*.json.

    It is built in a temporary sibling directory and renamed into place when complete, so an
    interrupted run never leaves a half-written dataset under `out`.
    """
    out = Path(out)
    marker = out / "synth.json"
    if marker.is_file():
        existing = json.loads(marker.read_text())
        if existing == json.loads(json.dumps(config.to_json())):
            return out
        if not overwrite:
            raise ValueError(f"{out} holds a synthetic dataset with other settings ({marker}); pass overwrite=True "
                             "(--overwrite) or choose another directory")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not a tdbnas synthetic dataset; choose an empty or new directory")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for split in ("train", "val"):
        if split == "val" and config.num_val == 0:
            continue
        instances = generate_split(config, split, staging / "images" / split, progress)
        write_json_atomic(staging / "annotations" / f"instances_{split}.json", instances, indent=None)
    write_json_atomic(staging / "synth.json", config.to_json())
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
