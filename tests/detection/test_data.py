"""Detection data: the synthetic dataset, the COCO-format loader, its errors, and augmentation."""

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tdbnas.detection.data import (
    Augmentation,
    CocoDetection,
    DatasetError,
    DatasetWarning,
    build_dataset,
    collate_detection,
    normalize_image,
)
from tdbnas.detection.data.synth import CLASSES, SynthConfig, render_image, write_synthetic_dataset
from tdbnas.detection.data.transforms import horizontal_flip, ssd_random_crop

pytestmark = pytest.mark.torch

SMALL = SynthConfig(num_train=24, num_val=8, image_size=96, seed=5)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("d") / "synth", SMALL, progress=False)


# ---- the synthetic dataset -------------------------------------------------------------------------
def test_synthetic_dataset_is_deterministic_per_seed(synth, tmp_path):
    again = write_synthetic_dataset(tmp_path / "again", SMALL, progress=False)
    other = write_synthetic_dataset(tmp_path / "other", SynthConfig(**{**SMALL.__dict__, "seed": 6}), progress=False)
    annotations = "annotations/instances_train.json"
    assert (synth / annotations).read_bytes() == (again / annotations).read_bytes()
    assert (synth / "images/train/000003.jpg").read_bytes() == (again / "images/train/000003.jpg").read_bytes()
    assert (synth / annotations).read_bytes() != (other / annotations).read_bytes()


def test_synthetic_objects_follow_the_spec():
    # Statistics over many images at the default 160x160: classes, counts per image, sizes, clutter.
    config = SynthConfig()
    per_image, extents, areas, labels = [], [], [], []
    for index in range(150):
        image, objects = render_image(config, np.random.default_rng([9, index]))
        assert image.shape == (160, 160, 3) and image.dtype == np.uint8
        per_image.append(len(objects))
        for obj in objects:
            x, y, w, h = obj["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 160 and y + h <= 160 and w > 0 and h > 0
            assert obj["area"] <= w * h
            extents.append(max(w, h))
            areas.append(obj["area"])
            labels.append(obj["label"])
    assert min(per_image) >= 1 and max(per_image) <= 8 and np.mean(per_image) > 3
    assert set(labels) == set(range(len(CLASSES))) and len(CLASSES) >= 6
    assert max(extents) <= 80 + 1  # the longer side of the (rotated) object's box; +1 for anti-aliasing
    assert np.mean(np.array(areas) < 32 ** 2) > 0.3  # COCO "small" objects are a large share
    assert np.mean(np.array(areas) >= 32 ** 2) > 0.1  # ... but not all of them
    assert min(extents) <= 12


def test_existing_dataset_is_reused_and_other_settings_are_refused(synth):
    stamp = (synth / "annotations/instances_val.json").stat().st_mtime_ns
    write_synthetic_dataset(synth, SMALL, progress=False)
    assert (synth / "annotations/instances_val.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings"):
        write_synthetic_dataset(synth, SynthConfig(num_train=3, num_val=1, image_size=96), progress=False)


def test_invalid_synth_settings_are_explained():
    with pytest.raises(ValueError, match="min_objects"):
        SynthConfig(min_objects=5, max_objects=2)
    with pytest.raises(ValueError, match="unknown shape classes.*'hexagon'"):
        SynthConfig(classes=("ellipse", "hexagon"))


# ---- loading ---------------------------------------------------------------------------------------
def test_loader_gives_normalised_boxes_and_labels_matching_the_json(synth):
    dataset = build_dataset(synth, "val", size=64)
    data = json.loads((synth / "annotations/instances_val.json").read_text())
    assert dataset.num_classes == len(CLASSES) and dataset.label_to_category_id == [1, 2, 3, 4, 5, 6]
    image, target = dataset[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0
    expected = [a for a in data["annotations"] if a["image_id"] == target["image_id"]]
    assert len(target["boxes"]) == len(expected)
    x, y, w, h = expected[0]["bbox"]
    size = SMALL.image_size
    assert target["boxes"][0].tolist() == pytest.approx([y / size, x / size, (y + h) / size, (x + w) / size])
    assert target["labels"][0] == expected[0]["category_id"] - 1
    assert target["orig_size"] == (size, size)


def test_collate_stacks_images_and_keeps_ragged_targets(synth):
    dataset = build_dataset(synth, "train", size=64, train=True)
    images, targets = collate_detection([dataset.get(i, np.random.default_rng(i)) for i in range(4)])
    assert images.shape == (4, 3, 64, 64) and len(targets) == 4
    with pytest.raises(DatasetError, match="differ in shape"):
        collate_detection([(torch.zeros(3, 8, 8), {}), (torch.zeros(3, 9, 9), {})])


def test_augmentation_is_a_function_of_the_rng(synth):
    dataset = build_dataset(synth, "train", size=64, train=True)
    a, b = dataset.get(2, np.random.default_rng(7)), dataset.get(2, np.random.default_rng(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    evaluation = build_dataset(synth, "train", size=64)
    assert torch.equal(evaluation[2][0], evaluation[2][0])


def _coco(tmp_path, images=None, annotations=None, categories=None, make_files=True):
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 40, "height": 20},
                                                 {"id": 2, "file_name": "b.png", "width": 40, "height": 20}]
    annotations = annotations if annotations is not None else [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [4, 2, 8, 6]}]
    categories = categories if categories is not None else [{"id": 3, "name": "cat"}, {"id": 8, "name": "dog"}]
    (tmp_path / "annotations").mkdir(exist_ok=True)
    (tmp_path / "images" / "s").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "annotations" / "instances_s.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    if make_files:
        for image in images:
            Image.new("RGB", (image["width"], image["height"]), (200, 10, 10)).save(tmp_path / "images/s" /
                                                                                     image["file_name"])
    return path


def test_background_only_images_are_samples_with_no_boxes(tmp_path):
    _coco(tmp_path)
    dataset = build_dataset(tmp_path, "s", size=32, train=True)
    _, target = dataset.get(1, np.random.default_rng(0))  # image 2 has no annotations
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    from tdbnas.detection.loss import DetectionLoss

    anchors = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.2, 0.2]])
    loss = DetectionLoss(anchors, num_classes=2)(torch.zeros(1, 2, 4), torch.zeros(1, 2, 3), [target["boxes"]],
                                                 [target["labels"]])
    assert torch.isfinite(loss["loss"]) and loss["matches"] == 0


def test_malformed_json_names_the_file(tmp_path):
    path = _coco(tmp_path)
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"instances_s\.json is not valid JSON"):
        build_dataset(tmp_path, "s")
    path.write_text('{"images": []}')
    with pytest.raises(DatasetError, match=r"lacks the list\(s\) \['annotations', 'categories'\]"):
        build_dataset(tmp_path, "s")


def test_unknown_category_and_image_ids_name_the_annotation(tmp_path):
    _coco(tmp_path, annotations=[{"id": 77, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2]}])
    with pytest.raises(DatasetError, match="annotation id 77 has category id 5, which is not in 'categories'"):
        build_dataset(tmp_path, "s")
    _coco(tmp_path, annotations=[{"id": 78, "image_id": 9, "category_id": 3, "bbox": [1, 1, 2, 2]}])
    with pytest.raises(DatasetError, match="annotation id 78 refers to image id 9"):
        build_dataset(tmp_path, "s")
    _coco(tmp_path, annotations=[{"id": 79, "image_id": 1, "category_id": 3}])
    with pytest.raises(DatasetError, match=r"annotation id 79 lacks \['bbox'\]"):
        build_dataset(tmp_path, "s")


def test_missing_image_files_are_listed(tmp_path):
    _coco(tmp_path)
    (tmp_path / "images/s/b.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image file\(s\) listed in .* are missing .*'b.png'"):
        build_dataset(tmp_path, "s")


def test_degenerate_and_outside_boxes_are_skipped_with_a_count(tmp_path):
    _coco(tmp_path, annotations=[
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 2, 0, 6]},       # zero width
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 2, 5, 5]},      # right of the 40-px image
        {"id": 3, "image_id": 1, "category_id": 8, "bbox": [30, -4, 20, 10]},   # partly outside: clipped
        {"id": 4, "image_id": 2, "category_id": 8, "bbox": [1, 1, 5, 5], "iscrowd": 1},
    ])
    with pytest.warns(DatasetWarning) as caught:
        dataset = build_dataset(tmp_path, "s", size=32)
    message = str(caught[0].message)
    for part in ("instances_s.json", "1 skipped with zero", "1 skipped wholly outside", "1 partly outside",
                 "1 crowd regions skipped"):
        assert part in message
    boxes, labels = dataset.targets[0]
    assert boxes[0].tolist() == pytest.approx([0.0, 0.75, 0.3, 1.0]) and labels.tolist() == [1]
    assert len(dataset.targets[1][0]) == 0  # the crowd region is not a target


def test_image_size_disagreeing_with_the_json_is_an_error_naming_both(tmp_path):
    _coco(tmp_path)
    Image.new("RGB", (10, 10)).save(tmp_path / "images/s/a.png")
    dataset = build_dataset(tmp_path, "s", size=32)
    with pytest.raises(DatasetError, match=r"image id 1: .*a.png is 10x10 but .* says 40x20"):
        dataset[0]
    (tmp_path / "images/s/a.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot read"):
        dataset[0]


def test_missing_split_or_directory_says_what_exists(tmp_path):
    with pytest.raises(DatasetError, match="tdbnas data synth"):
        build_dataset(tmp_path / "nope", "train")
    _coco(tmp_path)
    with pytest.raises(DatasetError, match=r"no annotation file .*instances_train\.json; found \['instances_s.json'\]"):
        build_dataset(tmp_path, "train")


def test_coco_2017_layout_is_found(tmp_path):
    _coco(tmp_path)
    shutil.move(tmp_path / "images" / "s", tmp_path / "s")
    assert len(build_dataset(tmp_path, "s")) == 2


# ---- augmentation ----------------------------------------------------------------------------------
def _image_with_box(box_pixels, size=(60, 90)):
    image = np.zeros((*size, 3), np.uint8)
    y0, x0, y1, x1 = box_pixels
    image[y0:y1, x0:x1] = 255
    boxes = np.array([[y0 / size[0], x0 / size[1], y1 / size[0], x1 / size[1]]], np.float32)
    return image, boxes


def _white_extent(image):
    ys, xs = np.nonzero(image[..., 0] > 127)
    height, width = image.shape[:2]
    return [ys.min() / height, xs.min() / width, (ys.max() + 1) / height, (xs.max() + 1) / width]


def test_flip_moves_pixels_and_boxes_together():
    image, boxes = _image_with_box((10, 5, 30, 25))
    flipped, flipped_boxes = horizontal_flip(image, boxes)
    assert flipped_boxes[0].tolist() == pytest.approx(_white_extent(flipped))
    again, again_boxes = horizontal_flip(flipped, flipped_boxes)
    assert np.array_equal(again, image) and np.allclose(again_boxes, boxes)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), top=st.integers(0, 40), left=st.integers(0, 60), h=st.integers(4, 20),
       w=st.integers(4, 30))
def test_crop_boxes_still_cover_the_object_pixels(seed, top, left, h, w):
    image, boxes = _image_with_box((top, left, top + h, left + w))
    crop, crop_boxes, labels = ssd_random_crop(image, boxes, np.array([4]), np.random.default_rng(seed))
    assert len(crop_boxes) == len(labels) <= 1
    if len(crop_boxes):
        assert labels.tolist() == [4]
        assert np.all((crop_boxes >= 0) & (crop_boxes <= 1))
        assert crop_boxes[0].tolist() == pytest.approx(_white_extent(crop), abs=1e-6)


def test_crop_of_a_background_only_image_works():
    image = np.zeros((50, 50, 3), np.uint8)
    crop, boxes, labels = ssd_random_crop(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                          np.random.default_rng(1))
    assert crop.ndim == 3 and boxes.shape == (0, 4) and labels.shape == (0,)


def test_normalisation_maps_0_255_to_minus_one_one():
    pixels = np.array([[[0, 255, 51]]], np.uint8)
    assert normalize_image(pixels)[:, 0, 0].tolist() == pytest.approx([-1.0, 1.0, -0.6])


def test_dataset_without_augmentation_only_resizes(synth):
    dataset = CocoDetection(synth / "annotations/instances_val.json", synth / "images/val", size=48,
                            augmentation=None)
    plain = Augmentation(flip_probability=0.0, crop=None)
    same = CocoDetection(synth / "annotations/instances_val.json", synth / "images/val", size=48, augmentation=plain)
    assert torch.equal(dataset.get(1)[0], same.get(1, np.random.default_rng(3))[0])
