"""`tdbnas supernet train | eval | size` from the command line: outputs, recorded split, clear errors."""

import json

import pytest

from tdbnas.cli.main import main

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

SPACE_YAML = """\
name: tiny
blocks:
  - {name: stem, layers: 1, stride: 2, widths: [8], ops: [conv_k3]}
  - {name: b1, layers: 2, stride: 2, widths: [8, 16], ops: [ir_k3_e2, er_k3_e2], skippable: true}
  - {name: b2, layers: 2, stride: 2, widths: [16, 24], ops: [ir_k3_e2, tk_k3_i0.25_o0.75], skippable: true}
  - {name: b3, layers: 1, stride: 2, widths: [16, 24], ops: [ir_k3_e2, ir_k5_e2]}
  - {name: b4, layers: 2, stride: 2, widths: [24, 32], ops: [ir_k3_e2, er_k3_e2], skippable: true}
"""



@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_supernet")
    assert main(["data", "synth", "--out", str(root / "data"), "--train", "16", "--val", "4", "--image-size", "64",
                 "--no-progress"]) == 0
    (root / "tiny.yaml").write_text(SPACE_YAML)
    (root / "settings.yaml").write_text("head: {extra_depths: [32, 16]}\nwarmup_epochs: 0.5\n")
    return root


def test_train_then_eval(files, tmp_path, cli):
    out_dir = tmp_path / "sn"
    code, out, err = cli("supernet", "train", "--space", files / "tiny.yaml", "--data", files / "data",
                         "--config", files / "settings.yaml", "--resolution", "64", "--epochs", "1",
                         "--batch-size", "4", "--search-fraction", "0.25", "--search-seed", "2", "--workers", "0",
                         "--threads", "1", "--out", out_dir, "--no-progress")
    assert code == 0, err
    assert "trained 3 sampled paths" in out
    config = json.loads((out_dir / "config.json").read_text())
    assert (config["search_fraction"], config["search_seed"], config["val_split"]) == (0.25, 2, "")
    split = json.loads((out_dir / "search_split.json").read_text())
    assert (split["train_images"], split["search_images"]) == (12, 4)

    from tdbnas.search.supernet import sample_path
    from tdbnas.search.supernet_train import load_space

    arch = sample_path(load_space(str(files / "tiny.yaml")), 0).encode()
    code, out, err = cli("supernet", "eval", "--checkpoint", out_dir, "--arch", arch,
                         "--recalibration-images", "8", "--recalibration-batch-size", "4", "--json")
    assert code == 0, err
    payload = json.loads(out)
    result = payload["results"][0]
    assert result["arch"] == arch and result["images"] == 4 and result["recalibration_images"] == 8
    assert 0.0 <= result["mAP"] <= 1.0
    assert payload["settings"]["search_split"]["seed"] == 2


def test_size_prints_every_weight_sharing(files, cli):
    code, out, err = cli("supernet", "size", "--space", files / "tiny.yaml", "--num-classes", "3", "--json")
    assert code == 0, err
    sizes = json.loads(out)
    assert [s["weight_sharing"] for s in sizes] == ["none", "in", "width"]
    assert sizes[0]["parameters"] > sizes[1]["parameters"] > sizes[2]["parameters"]


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["supernet", "train", "--help"])
    out = capsys.readouterr().out
    assert "tdbnas supernet train --space tdb --data" in out and "search split" in out


@pytest.mark.parametrize("argv, message", [
    (["supernet", "train", "--space", "tdb", "--out", "X"], "no dataset: pass --data"),
    (["supernet", "train", "--space", "nope", "--data", "D", "--out", "X"], "neither a registered space"),
    (["supernet", "eval", "--checkpoint", "/nonexistent/sn", "--arch", "mobiledet-edgetpu"], "does not exist"),
    (["supernet", "size", "--space", "nope"], "neither a registered space"),
])
def test_bad_input_is_one_clear_line(argv, message, tmp_path, files, cli):
    argv = [str(tmp_path / "x") if a == "X" else str(files / "data") if a == "D" else a for a in argv]
    code, _, err = cli(*argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
