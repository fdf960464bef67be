"""`tdbnas data check | tile` and `tdbnas train` on data as users bring it: what the data needs,
tiles, a fitted head recorded with the run, a carved validation split, small-set defaults."""

import json

import numpy as np
import pytest
from PIL import Image

from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

pytestmark = pytest.mark.torch



@pytest.fixture(scope="module")
def small_objects(tmp_path_factory):
    """One class of 6-14 px objects in 128x128 images, train split only."""
    root = tmp_path_factory.mktemp("small") / "data"
    config = SynthConfig(num_train=24, num_val=0, image_size=128, min_object_size=6, max_object_size=14,
                         classes=("ellipse",))
    return write_synthetic_dataset(root, config, progress=False)


@pytest.mark.slow
def test_data_check_reports_sizes_anchors_and_a_fitted_head(small_objects, cli):
    code, out, err = cli("data", "check", small_objects, "--resolution", "128", "--json")
    assert code == 0, err
    anchors = json.loads(out)["anchors"]
    [ellipse, total] = anchors["classes"]
    assert ellipse["class"] == "ellipse" and ellipse["boxes"] == total["boxes"] > 24
    assert 4 <= ellipse["side_px"][str(50)] <= 14 and ellipse["small"] == 1.0
    assert anchors["matched"] < 0.1  # the MobileDets anchors (>= 12.8 px, every 16 px) miss them
    assert anchors["proposal"]["matched"] > anchors["matched"] + 0.3
    assert anchors["resolution_suggestion"]["resolution"] > 128
    code, out, _ = cli("data", "check", small_objects, "--resolution", "128")
    assert code == 0
    for text in ("side px p5/p50/p95", "current head (maps C4+C5 + 4 extra", "fitted head (--head auto): maps C3",
                 "as a settings file: head: {", "objects too small for 128x128: at --resolution"):
        assert text in out


def test_data_check_with_a_settings_file_checks_that_head(small_objects, tmp_path, cli):
    settings = tmp_path / "run.yaml"
    settings.write_text("resolution: 128\nhead: {from_features: [C3, C4, C5], min_scale: 0.05, max_scale: 0.3}\n")
    code, out, err = cli("data", "check", small_objects, "--config", settings, "--json")
    assert code == 0, err
    anchors = json.loads(out)["anchors"]
    assert anchors["head"]["from_features"] == ["C3", "C4", "C5"] and anchors["head"]["min_scale"] == 0.05
    assert anchors["resolution"] == 128


def test_data_tile_writes_a_dataset_of_tiles(tmp_path, cli):
    root = tmp_path / "aerial"
    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.zeros((500, 700, 3), np.uint8)).save(root / "images" / "train" / "ortho.jpg")
    boxes = [[10, 10, 20, 20], [300, 150, 25, 25], [650, 460, 30, 30]]
    (root / "annotations" / "instances_train.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "ortho.jpg", "width": 700, "height": 500}],
        "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b} for k, b in enumerate(boxes)],
        "categories": [{"id": 1, "name": "roof"}]}))
    code, out, err = cli("data", "tile", root, "--out", tmp_path / "tiles", "--size", "320", "--overlap",
                         "0.1", "--no-progress")
    assert code == 0, err
    assert "train: 1 images, 3 boxes -> 6 tiles" in out
    code, out, err = cli("data", "check", tmp_path / "tiles", "--json")
    assert code == 0 and json.loads(out)["images"] == 6 and json.loads(out)["objects"] >= 3
    code, _, err = cli("data", "tile", root, "--out", tmp_path / "tiles")
    assert code == 2 and err.count("\n") == 1 and "not empty" in err


@pytest.mark.slow
def test_train_with_head_auto_on_a_set_without_val_records_everything_eval_rebuilds(small_objects, tmp_path,
                                                                                      cli):
    out = tmp_path / "run"
    code, printed, err = cli("train", "--data", small_objects, "--arch", "mobiledet-cpu", "--resolution",
                             "128", "--head", "auto", "--strong-augmentation", "--batch-size", "8", "--max-minutes",
                             "0.05", "--workers", "0", "--out", out, "--no-progress")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    proposal = json.loads((out / "head_proposal.json").read_text())
    assert config["head"] == proposal["settings"] and config["head"]["from_features"][0] == "C3"
    assert config["epochs"] == 200.0  # 22 training images: the small-set default, capped
    assert config["data"] == str(out / "data") and config["strong_augmentation"] is True
    carved = json.loads((out / "data" / "carved.json").read_text())
    assert carved["val_images"] == 2 and carved["train_images"] == 22 and "mAP_small" in printed
    code, printed, err = cli("eval", "--weights", out / "model.pt", "--json", "--no-progress")
    assert code == 0, err  # the same head rebuilt from config.json: the weights fit
    payload = json.loads(printed)
    assert payload["images"] == 2 and {"mAP_small", "mAP_medium", "mAP_large"} <= set(payload["metrics"])
    # rerunning the same command resumes: the data-dependent settings resolve to the same values
    code, _, err = cli("train", "--data", small_objects, "--arch", "mobiledet-cpu", "--resolution", "128",
                       "--head", "auto", "--strong-augmentation", "--batch-size", "8", "--max-minutes", "0.05",
                       "--workers", "0", "--out", out, "--no-progress")
    assert code == 0, err


TINY_SPACE = """\
name: tiny
blocks:
  - {name: stem, layers: 1, stride: 2, widths: [8], ops: [conv_k3]}
  - {name: b1, layers: 1, stride: 2, widths: [8], ops: [ir_k3_e2]}
  - {name: b2, layers: 1, stride: 2, widths: [16], ops: [ir_k3_e2, er_k3_e2]}
  - {name: b3, layers: 1, stride: 2, widths: [16], ops: [ir_k3_e2]}
  - {name: b4, layers: 1, stride: 2, widths: [24], ops: [ir_k3_e2]}
"""


@pytest.mark.slow
def test_supernet_train_with_head_auto_records_the_fitted_head(small_objects, tmp_path, cli):
    (tmp_path / "tiny.yaml").write_text(TINY_SPACE)
    out = tmp_path / "sn"
    code, _, err = cli("supernet", "train", "--space", tmp_path / "tiny.yaml", "--data", small_objects,
                       "--resolution", "128", "--head", "auto", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                       "--threads", "1", "--out", out, "--no-progress")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["head"] == json.loads((out / "head_proposal.json").read_text())["settings"]
    assert config["head"]["from_features"][0] == "C3"
    code, printed, err = cli("supernet", "eval", "--checkpoint", out, "--arch",
                             "conv_k3_s2_c8/ir_k3_s2_e2_c8/ir_k3_s2_e2_c16/ir_k3_s2_e2_c16/ir_k3_s2_e2_c24",
                             "--recalibration-images", "8", "--max-images", "4", "--json")
    assert code == 0, err  # the supernet is rebuilt with the recorded head: the weights fit
    assert {"mAP_small", "mAP_medium", "mAP_large"} <= set(json.loads(printed)["results"][0])
