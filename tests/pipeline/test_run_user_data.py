"""`tdbnas run --data DIR` on data as users bring it: one COCO split of non-square images at
another size than the input, a validation split carved from it, anchors fitted to its boxes."""

import json

import numpy as np
import pytest
from PIL import Image

from tdbnas.cli.main import main
from tdbnas.detection.data.synth import SynthConfig, render_image

pytestmark = [pytest.mark.torch, pytest.mark.tflite]


def write_non_square_dataset(root, count=40, sizes=((72, 120), (100, 64), (90, 90))):
    """`count` synthetic images resized to non-square (height, width) sizes, boxes scaled with
    them; one split only (`train`), as a labelling tool exports it."""
    config = SynthConfig(image_size=96, max_objects=4, classes=("ellipse", "rectangle"))
    images, annotations = [], []
    (root / "images" / "train").mkdir(parents=True)
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        pixels, objects = render_image(config, np.random.default_rng([3, index]))
        name = f"photo_{index:03d}.jpg"
        Image.fromarray(pixels).resize((width, height), Image.BILINEAR).save(root / "images" / "train" / name)
        images.append({"id": index + 1, "file_name": name, "width": width, "height": height})
        for obj in objects:
            x, y, w, h = obj["bbox"]
            sx, sy = width / 96, height / 96
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": obj["label"] + 1,
                                "bbox": [x * sx, y * sy, w * sx, h * sy], "area": w * sx * h * sy, "iscrowd": 0})
    (root / "annotations").mkdir()
    categories = [{"id": 1, "name": "ellipse"}, {"id": 2, "name": "rectangle"}]
    (root / "annotations" / "instances_train.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    return root


@pytest.mark.slow
def test_run_on_a_users_non_square_coco_export(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TDBNAS_CACHE", str(tmp_path / "cache"))
    data = write_non_square_dataset(tmp_path / "labels")
    out = tmp_path / "run"
    # smoke sizes (64x64 input); the modelled Edge TPU profile keeps the test free of micro-model builds
    code = main(["run", "--config", "smoke", "--data", str(data), "--out", str(out), "--device", "edgetpu",
                 "--head", "auto"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads((out / "report" / "results.json").read_text())
    stage = results["data"]
    # the validation split was carved from train (10 %, recorded) and every stage read it
    carved = json.loads((out / "data" / "carved" / "carved.json").read_text())
    assert stage["root"] == str(out / "data" / "carved") and stage["val_images"] == carved["val_images"] == 4
    assert stage["train_images"] == 36 and carved["source"] == str(data.resolve())
    # the fitted head is recorded once and used by training, export and the report
    head = stage["head"]
    assert stage["head_proposal"]["matched"] >= stage["head_proposal"]["current_matched"]
    retrain = json.loads((out / "retrain" / "config.json").read_text())
    assert retrain["head"] == head and retrain["data"] == stage["root"]
    metadata = json.loads((out / "export" / "model.json").read_text())["metadata"]
    assert metadata["anchors"]["head"]["min_scale"] == head["min_scale"]
    assert metadata["input"]["resize"]["mode"] == "stretch" and metadata["resolution"] == [64, 64]
    # evaluation ran on the original, non-square images (COCO boxes in their own pixels)
    assert set(results["retrain"]["val_metrics"]) >= {"mAP", "mAP_small", "mAP_medium", "mAP_large"}
    assert results["measure"]["plain_interpreter"]["images"] == 4
    assert (out / "report" / "report.md").is_file()


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_the_deployment_check_prepares_inputs_exactly_as_training(mode, tmp_path):
    """plain_check.py (no tdbnas imports) follows the export metadata's pre-processing note: the
    same pixels and the same box mapping as `transforms.fit_to_input`."""
    from tdbnas.detection.data.transforms import fit_to_input
    from tdbnas.export.pipeline import preprocessing_note
    from tdbnas.pipeline.plain_check import fit, preprocessing

    pixels = np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    note = preprocessing_note(mode, (64, 64))
    (tmp_path / "m.json").write_text(json.dumps({"metadata": {"input": {"resize": note}}}))
    assert preprocessing(str(tmp_path / "m.tflite")) == note
    deployed, (sy, sx, oy, ox) = fit(Image.fromarray(pixels), 64, 64, note)
    trained, _, frame = fit_to_input(pixels, np.zeros((0, 4), np.float32), (64, 64), mode)
    assert np.array_equal(deployed.astype(np.uint8), trained)
    assert (sy, sx) == pytest.approx(frame.scale) and (oy, ox) == pytest.approx(frame.offset)
