"""Detection data: COCO-format datasets, SSD augmentation and the built-in synthetic dataset.

    >>> from tdbnas.detection.data import build_dataset
    >>> train = build_dataset("data/synth", "train", size=160, train=True)   # doctest: +SKIP
"""

from tdbnas.detection.data.coco import (
    CocoDetection,
    DatasetError,
    DatasetWarning,
    SplitFiles,
    build_dataset,
    collate_detection,
    find_split,
)
from tdbnas.detection.data.transforms import INPUT_OFFSET, INPUT_SCALE, Augmentation, CropSettings, normalize_image

__all__ = ["INPUT_OFFSET", "INPUT_SCALE", "Augmentation", "CocoDetection", "CropSettings", "DatasetError",
           "DatasetWarning", "SplitFiles", "build_dataset", "collate_detection", "find_split", "normalize_image"]
