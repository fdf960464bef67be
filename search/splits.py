"""The search split: training images held out from supernet training, to score candidates on.

DetNAS scores candidates on a held-out part of the training data and keeps the final val split
for the searched network alone (reference §2.1, §6.7; MMRazor's port searches on val2017
instead, which leaks the test set into the search). Here the held-out part is carved from the
training split deterministically by seed: a fixed fraction of its images, chosen by a seeded
permutation of the split's image order. The supernet trains on the rest (`train view`) and
never sees the search images; the evaluator scores on the search view, whose own COCO index
holds only the search images, so COCOeval cannot count the others.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SEARCH_SPLIT_FORMAT = "tdbnas.search_split"


@dataclass(frozen=True)
class SearchSplit:
    """Which images of dataset split `split` are held out for search."""

    fraction: float = 0.1
    seed: int = 0
    split: str = "train"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"the search split is a fraction of the training images in (0, 1), got {self.fraction}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"the search split seed must be a non-negative integer, got {self.seed!r}")

    def search_indices(self, num_images: int) -> list[int]:
        """Sorted positions of the held-out images among `num_images` (at least one, never all)."""
        from tdbnas.detection.data.carve import held_out_indices

        if num_images < 2:
            raise ValueError(f"split {self.split!r} has {num_images} image(s); carving a search split needs at least 2")
        return held_out_indices(num_images, self.fraction, self.seed)


class DatasetView(torch.utils.data.Dataset):
    """Some images of a `CocoDetection`, in its order, with a COCO index of those images only.

    Serves training (`get(index, rng)` for seeded augmentation), `evaluate_model` (`coco`,
    `label_to_category_id`) and recalibration alike.
    """

    def __init__(self, dataset, indices: Sequence[int], name: str):
        self.dataset, self.indices, self.name = dataset, list(indices), name
        self._coco = None

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, index: int, rng: np.random.Generator | None = None):
        return self.dataset.get(self.indices[index], rng=rng)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]

    @property
    def image_ids(self) -> list[int]:
        return [self.dataset.ids[i] for i in self.indices]

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    @property
    def label_to_category_id(self) -> list[int]:
        return self.dataset.label_to_category_id

    @property
    def coco(self):
        """A pycocotools COCO index of this view's images and their annotations only."""
        if self._coco is None:
            from pycocotools.coco import COCO

            full = self.dataset.coco.dataset
            ids = set(self.image_ids)
            data = {**{k: v for k, v in full.items() if k not in ("images", "annotations")},
                    "images": [image for image in full["images"] if image["id"] in ids],
                    "annotations": [a for a in full["annotations"] if a["image_id"] in ids]}
            coco = COCO()
            coco.dataset = data
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco


def carve(train_dataset, search_dataset, split: SearchSplit) -> tuple[DatasetView, DatasetView]:
    """(train view, search view) of one split opened twice: `train_dataset` with the training
    transforms, `search_dataset` with the evaluation ones (they may be the same object)."""
    if list(train_dataset.ids) != list(search_dataset.ids):
        raise ValueError("the training and search datasets must be the same split (their image ids differ)")
    held_out = split.search_indices(len(train_dataset))
    kept = sorted(set(range(len(train_dataset))) - set(held_out))
    train_view = DatasetView(train_dataset, kept, f"{split.split}-minus-search")
    return train_view, DatasetView(search_dataset, held_out, "search")


def build_search_split(root: str | Path, split: SearchSplit, *, size: int | tuple[int, int],
                       augmentation=None, resize: str = "stretch") -> tuple[DatasetView, DatasetView]:
    """(train view, search view) of `split.split` under `root`. The train view augments with
    `augmentation` (None: resize only, e.g. for BN recalibration); the search view never does."""
    from tdbnas.detection.data import build_dataset

    plain = build_dataset(root, split.split, size=size, train=False, resize=resize)
    augmented = plain if augmentation is None else build_dataset(root, split.split, size=size, train=True,
                                                                 augmentation=augmentation, resize=resize)
    return carve(augmented, plain, split)


def split_record(split: SearchSplit, train_view: DatasetView, search_view: DatasetView) -> dict[str, Any]:
    """What a run writes as search_split.json: the settings and the held-out image ids."""
    return {"format": SEARCH_SPLIT_FORMAT, "version": 1, "split": split.split, "fraction": split.fraction,
            "seed": split.seed, "train_images": len(train_view), "search_images": len(search_view),
            "search_image_ids": search_view.image_ids}
