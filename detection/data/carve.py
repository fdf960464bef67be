"""A validation split carved from the training split, for datasets that come without one.

Labelling tools often export one COCO file. Training without a validation split measures
nothing, so a fixed share of the training images is held out -- chosen by a seeded
permutation, the same rule as the supernet's search split -- and written as a dataset root of
its own, which every later command (eval, export, search) reads like any other:

    OUT/annotations/instances_<train>.json   the training split minus the held-out images
    OUT/annotations/instances_<val>.json     the held-out images
    OUT/images/<train>, OUT/images/<val>     links to the source split's image folder
    OUT/carved.json                          source, fraction, seed and the held-out image ids

Records are copied unchanged. Carving again with the same settings reuses OUT; other
settings are an error rather than a silent reshuffle of which images are held out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.detection.data.coco import DatasetError, _load_json, find_split
from tdbnas.spaces.atomic import write_json_atomic

CARVE_FORMAT = "tdbnas.carved_split"


def held_out_indices(num_images: int, fraction: float, seed: int) -> list[int]:
    """Sorted positions of the held-out images among `num_images`: round(fraction * n), at
    least one and never all, the first of a permutation seeded by (seed, n)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out share must be in (0, 1), got {fraction}")
    if num_images < 2:
        raise ValueError(f"the split has {num_images} image(s); holding some out needs at least 2")
    count = min(num_images - 1, max(1, round(fraction * num_images)))
    order = np.random.default_rng([seed, num_images]).permutation(num_images)
    return sorted(int(i) for i in order[:count])


def needs_validation_split(root: str | Path, train_split: str, val_split: str) -> bool:
    """True when `root` holds the training split's annotations and no other split at all (a
    missing split next to other ones is more likely a wrong name, which `find_split` reports)."""
    annotations = Path(root) / "annotations"
    found = {p.name for p in annotations.glob("instances_*.json")}
    return found == {f"instances_{train_split}.json"} and val_split != train_split


def carve_validation(root: str | Path, out: str | Path, *, train_split: str = "train", val_split: str = "val",
                     fraction: float = 0.1, seed: int = 0) -> Path:
    """Write (or reuse) OUT with `train_split` minus a held-out share of it, and `val_split`."""
    files = find_split(root, train_split)
    out = Path(out)
    data = _load_json(files.annotations)
    images = data["images"]
    held = held_out_indices(len(images), fraction, seed)
    held_ids = [images[i].get("id") if isinstance(images[i], dict) else None for i in held]
    record = {"format": CARVE_FORMAT, "version": 1, "source": str(Path(root).resolve()), "train_split": train_split,
              "val_split": val_split, "fraction": fraction, "seed": seed, "train_images": len(images) - len(held),
              "val_images": len(held), "val_image_ids": held_ids}
    marker = out / "carved.json"
    if marker.is_file():
        if json.loads(marker.read_text()) == json.loads(json.dumps(record)):
            return out
        raise ValueError(f"{out} holds a validation split carved with other settings ({marker}); choose another "
                         "output directory or remove it")
    kept = set(range(len(images))) - set(held)
    for split, chosen in ((train_split, kept), (val_split, set(held))):
        subset = [images[i] for i in range(len(images)) if i in chosen]
        ids = {image.get("id") for image in subset if isinstance(image, dict)}
        annotations = [a for a in data["annotations"] if isinstance(a, dict) and a.get("image_id") in ids]
        write_json_atomic(out / "annotations" / f"instances_{split}.json",
                          {**data, "images": subset, "annotations": annotations}, indent=None)
        _link(out / "images" / split, files.images.resolve())
    write_json_atomic(marker, record)
    return out


def _link(link: Path, target: Path) -> None:
    """A symbolic link to the source image folder (the images are not copied)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    try:
        link.symlink_to(target, target_is_directory=True)
    except FileExistsError:
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            raise DatasetError(f"{link} exists and is not a link to {target}") from None
    except OSError as exc:
        raise DatasetError(f"cannot link {link} to the image folder {target}: {exc}") from None


def carved_record(root: str | Path) -> dict[str, Any] | None:
    """The carve record of a dataset root, or None when it was not carved."""
    marker = Path(root) / "carved.json"
    return json.loads(marker.read_text()) if marker.is_file() else None
