"""Cutting large images into overlapping tiles, with their boxes (`tdbnas data tile`).

Drone and aerial photographs are thousands of pixels wide and their objects a few dozen: resized
to a 320-px input the objects vanish. Tiling keeps the pixels: each image is cut into tiles of
`size` x `size` whose origins step by at most `size * (1 - overlap)` and whose last row and
column end at the image border, so consecutive tiles share at least `overlap * size` pixels.
Hence a box no larger than that overlap (in both directions) lies wholly inside some tile.

A box goes into every tile that holds at least `min_visible` of its area, clipped to the tile;
a box that no tile holds that much of (one larger than the overlap, cut by tile borders) goes
into the tile that holds most of it, so every source box lands in some tile. Images smaller than
`size` in a direction make tiles of their own extent there (no padding).

The output is a COCO-format dataset of its own (`OUT/images/<split>/`, `OUT/annotations/
instances_<split>.json`); each tile record keeps `source_image_id`, `source_file_name`, `tile_x`
and `tile_y`, so detections on tiles map back to their photograph. It is written in a
temporary sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tdbnas.detection.data.coco import DatasetError, build_dataset
from tdbnas.spaces.atomic import write_json_atomic

TILE_FORMAT = "tdbnas.tiles"


@dataclass(frozen=True)
class TileSettings:
    size: int = 320
    overlap: float = 0.1
    min_visible: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"tile size must be an integer of at least 8 pixels, got {self.size!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"tile overlap must be in [0, 1), got {self.overlap}")
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError(f"min_visible must be in (0, 1], got {self.min_visible}")


def tile_origins(length: int, size: int, overlap: float) -> list[int]:
    """Tile starts along one side of `length` pixels: steps of at most size * (1 - overlap), the
    last tile ending at the border."""
    if length <= size:
        return [0]
    step = max(1, int(size * (1 - overlap)))
    return sorted(set(range(0, length - size, step)) | {length - size})


def tile_boxes(boxes_px: np.ndarray, tiles: Sequence[tuple[int, int, int, int]], min_visible: float
               ) -> list[list[tuple[int, np.ndarray]]]:
    """Per tile (x, y, w, h), the (box index, clipped box in tile pixels x0, y0, x1, y1) it keeps
    of `boxes_px` [G, 4] (x0, y0, x1, y1 in image pixels); see the module docstring."""
    if len(boxes_px) == 0:
        return [[] for _ in tiles]
    origin = np.array([[x, y, x, y] for x, y, _, _ in tiles], dtype=np.float64)  # [T, 4]
    extent = np.array([[w, h, w, h] for _, _, w, h in tiles], dtype=np.float64)
    clipped = np.clip(boxes_px[None] - origin[:, None], 0, extent[:, None])      # [T, G, 4]
    visible = np.clip(clipped[..., 2] - clipped[..., 0], 0, None) * np.clip(clipped[..., 3] - clipped[..., 1], 0, None)
    area = (boxes_px[:, 2] - boxes_px[:, 0]) * (boxes_px[:, 3] - boxes_px[:, 1])
    share = visible / np.maximum(area, 1e-12)[None]                             # [T, G]
    keep = share >= min_visible - 1e-9
    homeless = ~keep.any(axis=0)
    keep[share[:, homeless].argmax(axis=0), np.flatnonzero(homeless)] = True  # the tile holding most of it
    keep &= share > 0
    return [[(int(g), clipped[t, g]) for g in np.flatnonzero(keep[t])] for t in range(len(tiles))]


def _tile_name(record: dict[str, Any], x: int, y: int) -> str:
    path = Path(record["file_name"])
    return str(path.with_name(f"{path.stem}_{record['id']}_x{x}_y{y}{path.suffix or '.png'}"))


def tile_split(root: str | Path, split: str, out_images: Path, settings: TileSettings,
               progress: bool = False) -> tuple[dict[str, Any], dict[str, int]]:
    """Tile every image of `split`; returns the COCO instances dict and counts."""
    from tqdm import tqdm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped boxes were reported by `data check`; tiles keep the rest
        dataset = build_dataset(root, split, size=settings.size)
    dataset.check_images()
    images, annotations = [], []
    counts = {"source_images": len(dataset), "source_boxes": 0, "tiles": 0, "tile_boxes": 0, "boxes_cut": 0,
              "background_tiles": 0}
    for index in tqdm(range(len(dataset)), desc=f"tile {split}", unit="img", disable=not progress, leave=False):
        record = dataset.images[index]
        height, width = record["height"], record["width"]
        boxes, labels = dataset.targets[index]
        boxes_px = (boxes[:, [1, 0, 3, 2]] * np.array([width, height, width, height])).astype(np.float64)
        counts["source_boxes"] += len(boxes_px)
        tiles = [(x, y, min(settings.size, width), min(settings.size, height))
                 for y in tile_origins(height, settings.size, settings.overlap)
                 for x in tile_origins(width, settings.size, settings.overlap)]
        pixels = dataset.load_image(index)
        for (x, y, w, h), kept in zip(tiles, tile_boxes(boxes_px, tiles, settings.min_visible)):
            tile_id = len(images) + 1
            name = _tile_name(record, x, y)
            (out_images / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[y:y + h, x:x + w]).save(out_images / name, **_save_options(name))
            images.append({"id": tile_id, "file_name": name, "width": w, "height": h,
                           "source_image_id": record["id"], "source_file_name": record["file_name"],
                           "tile_x": x, "tile_y": y})
            counts["background_tiles"] += not kept
            for box_index, (x0, y0, x1, y1) in kept:
                full = boxes_px[box_index]
                counts["boxes_cut"] += not np.allclose([x0 + x, y0 + y, x1 + x, y1 + y], full)
                annotations.append({"id": len(annotations) + 1, "image_id": tile_id,
                                    "category_id": dataset.label_to_category_id[int(labels[box_index])],
                                    "bbox": [round(float(v), 3) for v in (x0, y0, x1 - x0, y1 - y0)],
                                    "area": round(float((x1 - x0) * (y1 - y0)), 3), "iscrowd": 0})
    counts["tiles"], counts["tile_boxes"] = len(images), len(annotations)
    data = json.loads(dataset.annotation_file.read_text())
    return {"info": {"description": f"tiles of {dataset.annotation_file}", **asdict(settings)},
            "images": images, "annotations": annotations, "categories": data["categories"]}, counts


def _save_options(name: str) -> dict[str, Any]:
    return {"quality": 95} if Path(name).suffix.lower() in (".jpg", ".jpeg") else {}


def splits_of(root: str | Path) -> list[str]:
    """Every split with an annotation file under `root/annotations`."""
    files = (Path(root) / "annotations").glob("instances_*.json")
    names = sorted(p.name[len("instances_"):-len(".json")] for p in files)
    if not names:
        raise DatasetError(f"{root} has no annotations/instances_<split>.json (is it a COCO-format dataset?)")
    return names


def tile_dataset(root: str | Path, out: str | Path, settings: TileSettings = TileSettings(), *,
                 splits: Sequence[str] | None = None, overwrite: bool = False, progress: bool = False
                 ) -> dict[str, dict[str, int]]:
    """Write the tiled dataset of `splits` (default: all) of `root` to `out`; returns counts per split."""
    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve():
        raise ValueError("the tiled dataset needs its own directory (--out), not the source's")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; choose a new directory or pass --overwrite")
    splits = list(splits) if splits else splits_of(root)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    counts = {}
    try:
        for split in splits:
            instances, counts[split] = tile_split(root, split, staging / "images" / split, settings, progress)
            write_json_atomic(staging / "annotations" / f"instances_{split}.json", instances, indent=None)
        write_json_atomic(staging / "tiles.json", {"format": TILE_FORMAT, "version": 1, "source": str(root.resolve()),
                                                   **asdict(settings), "splits": counts})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return counts
