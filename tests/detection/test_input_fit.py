"""Images of any size: stretch and letterbox move boxes exactly with the pixels, and detections
map back to the original image exactly; the strong augmentation keeps boxes on their pixels."""

import json

import numpy as np
import pytest
from PIL import Image

from tdbnas.detection.data import build_dataset
from tdbnas.detection.data.transforms import (
    PAD_VALUE,
    Augmentation,
    CropSettings,
    Frame,
    PhotometricSettings,
    fit_to_input,
    input_frame,
    letterbox_layout,
    photometric_distort,
    prepare,
    vertical_flip,
)
from tdbnas.detection.evaluate import to_coco_results

pytestmark = pytest.mark.torch


def _image_with_box(size, box):
    """A black image of `size` (h, w) with a white box of pixel corners (y0, x0, y1, x1)."""
    image = np.zeros((*size, 3), np.uint8)
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = 255
    return image, np.array([[y0 / size[0], x0 / size[1], y1 / size[0], x1 / size[1]]], np.float32)


@pytest.mark.parametrize("size,box,target", [
    ((90, 150), (20, 30, 50, 90), (64, 64)),     # wide image: bands top and bottom
    ((200, 60), (40, 10, 160, 50), (64, 64)),    # tall image: bands left and right
    ((37, 53), (3, 7, 31, 45), (80, 96)),        # upscaled into a non-square input
])
def test_letterbox_moves_boxes_exactly_with_the_pixels(size, box, target):
    image, boxes = _image_with_box(size, box)
    fitted, fitted_boxes, frame = fit_to_input(image, boxes, target, "letterbox")
    assert fitted.shape == (*target, 3)
    (height, width), (top, left) = letterbox_layout(size, target)
    # Aspect ratio kept to the pixel, content centred, bands filled with the pad value.
    assert abs(height / width - size[0] / size[1]) <= 1 / min(height, width) + 1e-9
    assert (fitted[:top] == PAD_VALUE).all() and (fitted[top + height:] == PAD_VALUE).all()
    assert (fitted[:, :left] == PAD_VALUE).all() and (fitted[:, left + width:] == PAD_VALUE).all()
    # The box in input pixels: inside (one pixel in from the edge, away from bilinear blur) all white,
    # one pixel outside all dark.
    y0, x0, y1, x1 = fitted_boxes[0] * np.array([target[0], target[1]] * 2)
    inner = fitted[int(np.ceil(y0)) + 1:int(np.floor(y1)) - 1, int(np.ceil(x0)) + 1:int(np.floor(x1)) - 1, 0]
    assert inner.size and (inner == 255).all()
    ys, xs = np.nonzero((fitted[..., 0] > 127) & (fitted[..., 0] != PAD_VALUE))
    assert ys.min() >= np.floor(y0) - 1 and ys.max() + 1 <= np.ceil(y1) + 1
    assert xs.min() >= np.floor(x0) - 1 and xs.max() + 1 <= np.ceil(x1) + 1
    # The frame is the same arithmetic: input = image * scale + offset, and back.
    assert fitted_boxes[0].tolist() == pytest.approx(frame.to_input(boxes)[0].tolist())
    assert frame.to_image(fitted_boxes)[0].tolist() == pytest.approx(boxes[0].tolist(), abs=1e-6)


def test_stretch_is_the_identity_frame_and_square_letterbox_is_a_plain_resize():
    image, boxes = _image_with_box((90, 150), (20, 30, 50, 90))
    stretched, stretched_boxes, frame = fit_to_input(image, boxes, (64, 64), "stretch")
    assert frame == Frame() and np.array_equal(stretched_boxes, boxes) and stretched.shape == (64, 64, 3)
    square, _ = _image_with_box((120, 120), (10, 10, 40, 50))
    a, _, frame = fit_to_input(square, boxes, (64, 64), "letterbox")
    assert np.array_equal(a, fit_to_input(square, boxes, (64, 64), "stretch")[0]) and frame == Frame()
    with pytest.raises(ValueError, match="resize must be one of"):
        input_frame((10, 10), (8, 8), "crop")


def _non_square_dataset(root, sizes=((90, 150), (200, 60), (64, 64))):
    """A COCO split of non-square images, one known box each."""
    images, annotations = [], []
    (root / "images" / "val").mkdir(parents=True)
    for index, (height, width) in enumerate(sizes, start=1):
        x, y, w, h = width // 5, height // 4, width // 2, height // 3
        image, _ = _image_with_box((height, width), (y, x, y + h, x + w))
        Image.fromarray(image).save(root / "images" / "val" / f"{index}.png")
        images.append({"id": index, "file_name": f"{index}.png", "width": width, "height": height})
        annotations.append({"id": index, "image_id": index, "category_id": 1, "bbox": [x, y, w, h], "area": w * h,
                            "iscrowd": 0})
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}))
    return annotations


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_targets_mapped_back_through_the_frame_are_the_annotations(tmp_path, mode):
    annotations = _non_square_dataset(tmp_path)
    dataset = build_dataset(tmp_path, "val", size=48, resize=mode)
    for index, annotation in enumerate(annotations):
        image, target = dataset[index]
        assert tuple(image.shape) == (3, 48, 48)
        [record] = to_coco_results(target["image_id"], target["orig_size"], target["boxes"].numpy(), np.array([1.0]),
                                   np.array([0]), dataset.label_to_category_id, target["frame"])
        assert record["bbox"] == pytest.approx(annotation["bbox"], abs=2e-3)


def test_photometric_distortion_changes_colours_only():
    image, boxes = _image_with_box((40, 60), (5, 5, 30, 40))
    changed = [photometric_distort(image, np.random.default_rng(seed), PhotometricSettings()) for seed in range(8)]
    assert all(c.shape == image.shape and c.dtype == np.uint8 for c in changed)
    assert any(not np.array_equal(c, image) for c in changed)
    strong = Augmentation(crop=CropSettings(), photometric=PhotometricSettings(), vertical_flip_probability=0.5)
    for seed in range(20):
        pixels, out_boxes, labels, _ = prepare(image, boxes, np.array([0]), (40, 60), strong,
                                               np.random.default_rng(seed))
        assert pixels.shape == (3, 40, 60) and len(out_boxes) == len(labels)


def test_vertical_flip_moves_pixels_and_boxes_together():
    image, boxes = _image_with_box((40, 60), (5, 10, 15, 30))
    flipped, flipped_boxes = vertical_flip(image, boxes)
    ys, xs = np.nonzero(flipped[..., 0])
    assert flipped_boxes[0].tolist() == pytest.approx([ys.min() / 40, xs.min() / 60, (ys.max() + 1) / 40,
                                                       (xs.max() + 1) / 60])
