"""COCO-format detection datasets: an instances JSON plus a folder of images.

Layouts found under a dataset root, for a split name `S`:

    ROOT/annotations/instances_S.json   with images in ROOT/images/S/  (what `tdbnas data synth` writes)
                                                    or ROOT/S/          (the COCO 2017 layout: S = val2017)

The annotations are validated once, when the dataset is opened, so a bad file fails with its
name and the offending record instead of deep inside a DataLoader worker:

  * unreadable JSON, missing top-level keys, records without required fields or with fields of
    the wrong type (ids must be integers, file names non-empty relative paths), duplicate ids,
    annotations that name an unknown image or category, image files that do not exist ->
    `DatasetError` (`check_images()` also opens every image's header: unreadable files and
    sizes that differ from the record are errors too);
  * boxes with zero or negative size, or wholly outside their image -> skipped, counted, and
    reported in one warning (`dataset.skipped`); boxes partly outside are clipped;
  * `iscrowd` annotations are not training targets (COCOeval ignores them too);
  * images without annotations are kept as background-only samples.

Category ids (any integers) map to contiguous labels 0..C-1 in ascending id order;
`label_to_category_id` maps back for COCO results.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tdbnas.detection.data.transforms import RESIZE_MODES, Augmentation, prepare


class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message names the file and the record."""


class DatasetWarning(UserWarning):
    """Annotations that were skipped or clipped while opening a dataset (counted in the message)."""


@dataclass(frozen=True)
class SplitFiles:
    annotations: Path
    images: Path


def find_split(root: str | Path, split: str) -> SplitFiles:
    """Where the annotations and images of `split` live under `root` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist (make one with `tdbnas data synth --out "
                           f"{root}`, or point to a COCO-format dataset)")
    annotations = root / "annotations" / f"instances_{split}.json"
    if not annotations.is_file():
        found = sorted(p.name for p in (root / "annotations").glob("instances_*.json"))
        hint = f"; found {found}" if found else ""
        raise DatasetError(f"split {split!r} has no annotation file {annotations}{hint}")
    for images in (root / "images" / split, root / split):
        if images.is_dir():
            return SplitFiles(annotations, images)
    raise DatasetError(f"split {split!r}: no image folder {root / 'images' / split} or {root / split}")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object with 'images', 'annotations' and 'categories'")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise DatasetError(f"{path} lacks the list(s) {missing} of a COCO instances file")
    return data


def _require(record: Any, fields: Sequence[str], what: str, path: Path, index: int) -> None:
    if not isinstance(record, dict):
        raise DatasetError(f"{path}: {what} #{index} is not an object: {record!r:.80}")
    missing = [f for f in fields if f not in record]
    if missing:
        name = f"{what} id {record['id']}" if "id" in record else f"{what} #{index}"
        raise DatasetError(f"{path}: {name} lacks {missing}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_int_id(record: dict[str, Any], what: str, path: Path) -> None:
    if not _is_int(record["id"]):
        raise DatasetError(f"{path}: {what} id {record['id']!r} is not an integer")


class CocoDetection(torch.utils.data.Dataset):
    """One split of a COCO-format dataset, yielding `(image [3, H, W] float32, target dict)`.

    The target holds `boxes` (ymin, xmin, ymax, xmax normalised to the network input; float32
    [G, 4]), `labels` (int64 [G], 0-based), `image_id`, `orig_size` (height, width) and `frame`
    (`transforms.Frame`: how input coordinates map back to the image) for COCO results.
    `resize_mode` fits images of any size to `size`: "stretch" or "letterbox" (`transforms`).
    """

    def __init__(self, annotations: str | Path, images: str | Path, *, size: int | tuple[int, int] = 320,
                 augmentation: Augmentation | None = None, check_files: bool = True, resize_mode: str = "stretch"):
        from pycocotools.coco import COCO

        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.annotation_file, self.image_dir = Path(annotations), Path(images)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.augmentation, self.resize_mode = augmentation, resize_mode
        data = _load_json(self.annotation_file)
        self.categories = self._categories(data["categories"])
        self.label_to_category_id = [c["id"] for c in self.categories]
        category_to_label = {cid: label for label, cid in enumerate(self.label_to_category_id)}
        self.images = self._images(data["images"])
        self.skipped: Counter[str] = Counter()
        self.clipped = 0  # boxes partly outside their image, clipped and kept
        per_image = self._annotations(data["annotations"], category_to_label)
        self.ids = [image["id"] for image in self.images]
        self.targets = [per_image.get(image_id, (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
                        for image_id in self.ids]
        if check_files:
            self._check_files()
        if self.skipped or self.clipped:
            details = [f"{n} {reason}" for reason, n in sorted(self.skipped.items())]
            if self.clipped:
                details.append(f"{self.clipped} partly outside their image (clipped and kept)")
            warnings.warn(f"{self.annotation_file}: {', '.join(details)}", DatasetWarning, stacklevel=2)
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        self.coco = coco

    # ---- validation ----------------------------------------------------------------------
    def _categories(self, records: list[Any]) -> list[dict[str, Any]]:
        for index, record in enumerate(records):
            _require(record, ("id", "name"), "category", self.annotation_file, index)
            _require_int_id(record, "category", self.annotation_file)
        ids = [r["id"] for r in records]
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise DatasetError(f"{self.annotation_file}: duplicate category ids {duplicates}")
        if not records:
            raise DatasetError(f"{self.annotation_file} has no categories")
        return sorted(records, key=lambda r: r["id"])

    def _images(self, records: list[Any]) -> list[dict[str, Any]]:
        for index, record in enumerate(records):
            _require(record, ("id", "file_name", "width", "height"), "image", self.annotation_file, index)
            _require_int_id(record, "image", self.annotation_file)
            name = record["file_name"]
            if not (isinstance(name, str) and name.strip() and not Path(name).is_absolute()
                    and ".." not in Path(name).parts):
                raise DatasetError(f"{self.annotation_file}: image id {record['id']} has file_name {name!r}; "
                                   "expected a path relative to the image folder")
            if not (_is_int(record["width"]) and _is_int(record["height"])
                    and record["width"] > 0 and record["height"] > 0):
                raise DatasetError(f"{self.annotation_file}: image id {record['id']} has size "
                                   f"{record['width']}x{record['height']}; width and height must be positive integers")
        duplicates = sorted(i for i, n in Counter(r["id"] for r in records).items() if n > 1)
        if duplicates:
            raise DatasetError(f"{self.annotation_file}: duplicate image ids {duplicates[:10]}")
        return list(records)

    def _annotations(self, records: list[Any], category_to_label: dict[int, int]
                     ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        sizes = {image["id"]: (image["height"], image["width"]) for image in self.images}
        boxes: dict[int, list[list[float]]] = {}
        labels: dict[int, list[int]] = {}
        annotation_ids: Counter[int] = Counter()
        for index, record in enumerate(records):
            _require(record, ("id", "image_id", "category_id", "bbox"), "annotation", self.annotation_file, index)
            where = f"{self.annotation_file}: annotation id {record['id']!r}"
            if not all(_is_int(record[key]) for key in ("id", "image_id", "category_id")):
                raise DatasetError(f"{where}: id, image_id and category_id must be integers, got "
                                   f"{record['id']!r}, {record['image_id']!r}, {record['category_id']!r}")
            annotation_ids[record["id"]] += 1
            if record["image_id"] not in sizes:
                raise DatasetError(f"{where} refers to image id {record['image_id']}, which is not in 'images'")
            if record["category_id"] not in category_to_label:
                raise DatasetError(f"{where} has category id {record['category_id']}, which is not in 'categories' "
                                   f"(known: {sorted(category_to_label)[:20]})")
            bbox = record["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4
                    and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
                raise DatasetError(f"{where} has bbox {bbox!r}; expected [x, y, width, height] numbers")
            if record.get("iscrowd", 0):
                self.skipped["crowd regions skipped (not training targets)"] += 1
                continue
            height, width = sizes[record["image_id"]]
            x, y, w, h = (float(v) for v in bbox)
            if not (w > 0 and h > 0):
                self.skipped["skipped with zero or negative size"] += 1
                continue
            x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
            if x1 <= x0 or y1 <= y0:
                self.skipped["skipped wholly outside their image"] += 1
                continue
            if (x0, y0, x1, y1) != (x, y, x + w, y + h):
                self.clipped += 1
            boxes.setdefault(record["image_id"], []).append([y0 / height, x0 / width, y1 / height, x1 / width])
            labels.setdefault(record["image_id"], []).append(category_to_label[record["category_id"]])
        duplicates = sorted(i for i, n in annotation_ids.items() if n > 1)
        if duplicates:
            raise DatasetError(f"{self.annotation_file}: duplicate annotation ids {duplicates[:10]}")
        return {image_id: (np.array(b, np.float32), np.array(labels[image_id], np.int64))
                for image_id, b in boxes.items()}

    def _check_files(self) -> None:
        missing = [image["file_name"] for image in self.images if not (self.image_dir / image["file_name"]).is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} image file(s) listed in {self.annotation_file} are missing under "
                               f"{self.image_dir}, e.g. {missing[:3]}")

    def check_images(self, progress: bool = False) -> None:
        """Open every image's header: unreadable files and sizes other than the record's are
        `DatasetError`s now rather than in the middle of training."""
        from tqdm import tqdm

        for index in tqdm(range(len(self.images)), desc="images", unit="img", disable=not progress, leave=False):
            record = self.images[index]
            path = self.image_dir / record["file_name"]
            try:
                with Image.open(path) as handle:
                    width, height = handle.size
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise DatasetError(f"image id {record['id']}: cannot read {path}: {exc}") from None
            if (height, width) != (record["height"], record["width"]):
                raise DatasetError(f"image id {record['id']}: {path} is {width}x{height} but "
                                   f"{self.annotation_file} says {record['width']}x{record['height']}")

    # ---- access --------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, index: int) -> np.ndarray:
        """The image as uint8 HWC RGB, checked against the size its record declares."""
        record = self.images[index]
        path = self.image_dir / record["file_name"]
        try:
            with Image.open(path) as handle:
                image = np.asarray(handle.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetError(f"image id {record['id']}: cannot read {path}: {exc}") from None
        if image.shape[:2] != (record["height"], record["width"]):
            raise DatasetError(f"image id {record['id']}: {path} is {image.shape[1]}x{image.shape[0]} but "
                               f"{self.annotation_file} says {record['width']}x{record['height']}")
        return image

    def get(self, index: int, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sample `index`, augmented with `rng` when the dataset has an augmentation."""
        boxes, labels = self.targets[index]
        image, boxes, labels, frame = prepare(self.load_image(index), boxes, labels, self.size, self.augmentation,
                                              rng, self.resize_mode)
        record = self.images[index]
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels), "image_id": record["id"],
                  "orig_size": (record["height"], record["width"]), "frame": frame}
        return torch.from_numpy(image), target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.get(index)


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]
                      ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack images; keep targets as a list (images hold different numbers of boxes)."""
    images = [image for image, _ in batch]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise DatasetError(f"images of one batch differ in shape {sorted(shapes)}; resize them to one size")
    return torch.stack(images), [target for _, target in batch]


def build_dataset(root: str | Path, split: str, *, size: int | tuple[int, int] = 320, train: bool = False,
                  augmentation: Augmentation | None = None, resize: str = "stretch") -> CocoDetection:
    """Split `split` of the dataset under `root`; `train=True` turns on the default augmentation;
    `resize` fits the images to `size` ("stretch" or "letterbox")."""
    files = find_split(root, split)
    if train and augmentation is None:
        augmentation = Augmentation()
    return CocoDetection(files.annotations, files.images, size=size, augmentation=augmentation if train else None,
                         resize_mode=resize)
