"""A validation split carved from train; large images cut into tiles that keep every box."""

import json

import numpy as np
import pytest
from PIL import Image

from tdbnas.detection.data import build_dataset
from tdbnas.detection.data.carve import carve_validation, held_out_indices, needs_validation_split
from tdbnas.detection.data.tile import TileSettings, tile_boxes, tile_dataset, tile_origins
from tdbnas.search.splits import SearchSplit

pytestmark = pytest.mark.torch


def write_split(root, split, image_sizes, boxes_per_image, seed=0, name="img"):
    """A COCO split with random images and `boxes_per_image` random boxes (x, y, w, h) each."""
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for index, (height, width) in enumerate(image_sizes, start=1):
        file_name = f"{name}_{index}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / "images" / split /
                                                                                     file_name)
        images.append({"id": index, "file_name": file_name, "width": width, "height": height})
        for w, h in boxes_per_image(rng, height, width):
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": 7,
                                "bbox": [x, y, float(w), float(h)], "iscrowd": 0})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "car"}]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return data


# ---- the carved validation split ---------------------------------------------------------------------
def test_a_validation_split_is_carved_deterministically_and_recorded(tmp_path):
    source = tmp_path / "labels"
    data = write_split(source, "train", [(20, 30)] * 20, lambda rng, h, w: [(5, 4)] * 2)
    assert needs_validation_split(source, "train", "val")
    root = carve_validation(source, tmp_path / "carved", fraction=0.1, seed=3)
    train, val = build_dataset(root, "train", size=32), build_dataset(root, "val", size=32)
    assert len(train) == 18 and len(val) == 2 and not set(train.ids) & set(val.ids)
    assert sorted(train.ids + val.ids) == [image["id"] for image in data["images"]]
    assert sum(len(b) for b, _ in train.targets) + sum(len(b) for b, _ in val.targets) == len(data["annotations"])
    record = json.loads((root / "carved.json").read_text())
    assert record["val_image_ids"] == val.ids and record["seed"] == 3 and record["fraction"] == 0.1
    # the same rule as the supernet's search split: the same images for the same seed
    assert [i + 1 for i in held_out_indices(20, 0.1, 3)] == val.ids
    assert SearchSplit(0.1, 3).search_indices(20) == held_out_indices(20, 0.1, 3)
    stamp = (root / "annotations" / "instances_val.json").stat().st_mtime_ns
    assert carve_validation(source, root, fraction=0.1, seed=3) == root  # reused as it is
    assert (root / "annotations" / "instances_val.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="carved with other settings"):
        carve_validation(source, root, fraction=0.1, seed=4)
    assert not needs_validation_split(root, "train", "val")


def test_no_carving_next_to_other_splits(tmp_path):
    write_split(tmp_path, "train2017", [(20, 30)] * 4, lambda rng, h, w: [])
    write_split(tmp_path, "val2017", [(20, 30)] * 2, lambda rng, h, w: [])
    assert not needs_validation_split(tmp_path, "train2017", "val")  # a wrong name is reported, not carved


# ---- tiles -------------------------------------------------------------------------------------------
def test_tile_origins_cover_the_side_with_the_promised_overlap():
    for length in (100, 320, 321, 700, 1000, 1913):
        origins = tile_origins(length, 320, 0.1)
        assert origins[0] == 0 and origins[-1] == max(0, length - 320)
        assert all(b - a <= 288 for a, b in zip(origins, origins[1:]))  # overlap >= 32 px


def _source_boxes(rng, height, width):
    small = [(rng.uniform(6, 32), rng.uniform(6, 32)) for _ in range(60)]  # up to the 32-px overlap
    large = [(rng.uniform(60, 300), rng.uniform(60, 300)) for _ in range(6)]
    return small + large


def test_tiling_round_trip_every_source_box_lands_in_some_tile(tmp_path):
    source = tmp_path / "aerial"
    data = write_split(source, "train", [(700, 1000), (250, 900)], _source_boxes, seed=1)
    counts = tile_dataset(source, tmp_path / "tiles", TileSettings(size=320, overlap=0.1))
    assert counts["train"]["source_boxes"] == len(data["annotations"])
    tiles = json.loads((tmp_path / "tiles" / "annotations" / "instances_train.json").read_text())
    tiled = build_dataset(tmp_path / "tiles", "train", size=320)  # a valid COCO dataset of its own
    tiled.check_images()
    assert len(tiled) == counts["train"]["tiles"] == 4 * 3 + 4 * 1
    by_tile = {image["id"]: image for image in tiles["images"]}
    assert all(image["width"] <= 320 and image["height"] <= 320 for image in tiles["images"])
    # every tile box, put back into its photograph's pixels
    back: dict[int, list[np.ndarray]] = {}
    for annotation in tiles["annotations"]:
        tile = by_tile[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        assert x >= 0 and y >= 0 and x + w <= tile["width"] + 1e-6 and y + h <= tile["height"] + 1e-6
        back.setdefault(tile["source_image_id"], []).append(
            np.array([x + tile["tile_x"], y + tile["tile_y"], x + w + tile["tile_x"], y + h + tile["tile_y"]]))
    for annotation in data["annotations"]:
        x, y, w, h = annotation["bbox"]
        box = np.array([x, y, x + w, y + h])
        candidates = np.array(back[annotation["image_id"]])
        inside = np.all((candidates[:, :2] >= box[:2] - 1e-3) & (candidates[:, 2:] <= box[2:] + 1e-3), axis=1)
        kept = (candidates[:, 2] - candidates[:, 0]) * (candidates[:, 3] - candidates[:, 1]) / (w * h)
        assert (inside & (kept > 0.3)).any(), f"source box {annotation['id']} is in no tile"
        if max(w, h) <= 32:  # no larger than the overlap: wholly inside some tile, exactly
            assert np.abs(candidates - box).max(axis=1).min() < 2e-3
    # the pixels of a tile are the photograph's
    tile = tiles["images"][5]
    photo = np.asarray(Image.open(source / "images" / "train" / tile["source_file_name"]))
    crop = np.asarray(Image.open(tmp_path / "tiles" / "images" / "train" / tile["file_name"]))
    assert np.array_equal(crop, photo[tile["tile_y"]:tile["tile_y"] + tile["height"],
                                      tile["tile_x"]:tile["tile_x"] + tile["width"]])


def test_a_box_goes_where_most_of_it_is():
    tiles = [(0, 0, 100, 100), (90, 0, 100, 100)]
    boxes = np.array([[80.0, 10, 100, 30],    # wholly in the first, half of it in the second: in both
                      [40.0, 40, 60, 60],     # wholly in the first
                      [70.0, 50, 160, 90]])   # larger than the overlap: 30/90 and 70/90 -> the second
    kept = tile_boxes(boxes, tiles, 0.5)
    assert [g for g, _ in kept[0]] == [0, 1] and [g for g, _ in kept[1]] == [0, 2]
    assert kept[1][1][1].tolist() == pytest.approx([0, 50, 70, 90])


def test_tiling_refuses_to_overwrite_and_leaves_nothing_on_error(tmp_path):
    source = tmp_path / "aerial"
    write_split(source, "train", [(400, 500)], lambda rng, h, w: [(20, 20)])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        tile_dataset(source, tmp_path / "busy")
    (source / "images" / "train" / "img_1.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="cannot read"):
        tile_dataset(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    with pytest.raises(ValueError, match="overlap"):
        TileSettings(overlap=1.0)
