"""Hostile and broken input stays a clear error: fuzzed COCO files (and their images), architecture
strings and space description files give either a result or one `error:` line -- never a
traceback, a hang (every example has a deadline) or a half-written output."""

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

pytestmark = pytest.mark.torch

FUZZ = settings(max_examples=60, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

# Values that do not belong in a COCO field (and a few that do).
HOSTILE = st.one_of(
    st.sampled_from([None, True, False, 0, -1, -40, 2 ** 70, 1.5, -2.5, float("nan"), float("inf"), "", "x",
                     "../../outside.png", "/etc/passwd", "ü日本 image.png", "a\nb.png", "\ud800.png", [], {}, [1, 2],
                     {"id": 1}, [0, 0, 0, 0], [1, 1, -5, 3], [100, 100, 5, 5], [1, 1, 1e308, 1e308]]),
    st.integers(-10, 300), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.floats(-50, 400), min_size=0, max_size=5),
)
IMAGE_FIELDS = ("id", "file_name", "width", "height")
ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox", "iscrowd", "area")


def base_dataset() -> dict:
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
              {"id": 2, "file_name": "снимок 2.png", "width": 24, "height": 36}]  # non-ASCII: fine
    annotations = [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [4, 3, 10, 8], "area": 80, "iscrowd": 0},
                   {"id": 2, "image_id": 2, "category_id": 5, "bbox": [2, 2, 6, 12], "area": 72, "iscrowd": 0}]
    return {"images": images, "annotations": annotations, "categories": [{"id": 5, "name": "thing"}]}


@st.composite
def mutations(draw):
    """A list of edits to the base dataset and its image files."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["image", "annotation", "category", "duplicate", "delete", "top", "file"]))
        if kind == "image":
            edits.append((kind, draw(st.integers(0, 1)), draw(st.sampled_from(IMAGE_FIELDS)), draw(HOSTILE)))
        elif kind == "annotation":
            edits.append((kind, draw(st.integers(0, 1)), draw(st.sampled_from(ANNOTATION_FIELDS)), draw(HOSTILE)))
        elif kind == "category":
            edits.append((kind, 0, draw(st.sampled_from(("id", "name"))), draw(HOSTILE)))
        elif kind == "duplicate":
            edits.append((kind, draw(st.sampled_from(("images", "annotations", "categories"))), 0, None))
        elif kind == "delete":
            section = draw(st.sampled_from(("images", "annotations", "categories")))
            fields = {"images": IMAGE_FIELDS, "annotations": ANNOTATION_FIELDS, "categories": ("id", "name")}
            edits.append((kind, section, draw(st.sampled_from(fields[section])), None))
        elif kind == "top":
            edits.append((kind, draw(st.sampled_from(("images", "annotations", "categories"))), 0, draw(HOSTILE)))
        else:
            edits.append((kind, draw(st.integers(0, 1)), draw(st.sampled_from(("missing", "garbage", "wrong size"))),
                          None))
    return edits


@st.composite
def box_edits(draw):
    """Edits that leave a usable dataset: boxes of zero or negative size, outside or across the
    border (skipped or clipped, with a warning), non-ASCII file names."""
    edits = [("annotation", draw(st.integers(0, 1)), "bbox",
              draw(st.lists(st.floats(-60, 90, allow_nan=False), min_size=4, max_size=4)))]
    if draw(st.booleans()):
        edits.append(("image", 0, "file_name", draw(st.sampled_from(["ü日本 image.png", "ça va.png", "émoji🙂.png"]))))
    return edits


COCO_EDITS = st.one_of(mutations(), box_edits())


def write_dataset(root: Path, edits) -> None:
    data = base_dataset()
    file_edits = []
    for kind, where, what, value in edits:
        if kind in ("image", "annotation", "category"):
            section = {"image": "images", "annotation": "annotations", "category": "categories"}[kind]
            records = data[section]
            if isinstance(records, list) and where < len(records) and isinstance(records[where], dict):
                records[where][what] = value
        elif kind == "duplicate":
            if isinstance(data[where], list) and data[where]:
                data[where].append(dict(data[where][0]) if isinstance(data[where][0], dict) else data[where][0])
        elif kind == "delete":
            record = data[where][0] if isinstance(data[where], list) and data[where] else None
            if isinstance(record, dict):
                record.pop(what, None)
        elif kind == "top":
            data[where] = value
        else:
            file_edits.append((where, what))
    (root / "images" / "s").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_s.json").write_text(json.dumps(data, allow_nan=True))
    images = data["images"] if isinstance(data["images"], list) else []
    for index, record in enumerate(images):
        if not isinstance(record, dict):
            continue
        name, width, height = record.get("file_name"), record.get("width"), record.get("height")
        if not (isinstance(name, str) and name and "/" not in name and name not in (".", "..")):
            continue
        size = (width, height) if all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 400
                                      for v in (width, height)) else (10, 10)
        try:
            path = root / "images" / "s" / name
            Image.new("RGB", size, (90, 30, 200)).save(path, format="PNG")
            for target, problem in file_edits:
                if target == index:
                    if problem == "missing":
                        path.unlink()
                    elif problem == "garbage":
                        path.write_bytes(b"\x89PNG but not really")
                    else:
                        Image.new("RGB", (size[0] + 3, size[1]), (0, 0, 0)).save(path, format="PNG")
        except (OSError, UnicodeEncodeError, ValueError):
            continue  # a name this file system refuses: the image is simply missing


def assert_result_or_one_error(code: int, out: str, err: str, command: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    if code == 2:
        assert err.startswith(f"tdbnas {command}: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    else:
        assert out.strip()



@settings(FUZZ, max_examples=30)
@given(edits=COCO_EDITS)
def test_fuzzed_coco_files_are_tiled_or_refused_in_one_line_without_partial_output(edits, tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("fuzz")
    write_dataset(root / "data", edits)
    out_dir = root / "tiles"
    code, out, err = cli("data", "tile", root / "data", "--out", out_dir, "--size", "32", "--no-progress")
    assert_result_or_one_error(code, out, err, "data")
    if code == 2:
        assert not out_dir.exists() and not list(root.glob(".tiles*"))  # nothing half-written
    else:
        assert (out_dir / "annotations" / "instances_s.json").is_file()


@settings(FUZZ, max_examples=25)
@given(edits=COCO_EDITS)
@pytest.mark.slow
def test_fuzzed_coco_files_are_checked_or_refused_in_one_line(edits, tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("fuzz")
    write_dataset(root / "data", edits)
    code, out, err = cli("data", "check", root / "data", "--split", "s", "--resolution", "64", "--json")
    assert_result_or_one_error(code, out, err, "data")
    if code == 0:
        json.loads(out)


VALID_ARCH = "conv_k3_s2_c32/tk_k3_i0.25_o0.75_c16/er_k3_s2_e8_c16,er_k3_e4_c16/ir_k5_s2_e8_c40,skip/ir_k3_s2_e4_c80"


@st.composite
def arch_strings(draw):
    """Valid strings with random edits, and arbitrary text."""
    if draw(st.booleans()):
        return draw(st.text(min_size=1, max_size=60).filter(lambda t: not t.startswith("-")))
    text = VALID_ARCH
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        insert = draw(st.sampled_from(["", "_", ",", "/", "+", "k", "s0", "c-8", "e0", "i9", "x", "9" * 30, "ü",
                                       "+fpn_p3-7_c64", "skip", "\n"]))
        cut = draw(st.integers(0, 3))
        text = text[:position] + insert + text[position + cut:]
    return text if text and not text.startswith("-") else "x"


@FUZZ
@given(text=arch_strings())
def test_fuzzed_architecture_strings_give_a_table_or_one_error_line(text, cli):
    code, out, err = cli("arch", "show", text)
    assert_result_or_one_error(code, out, err, "arch")


@st.composite
def space_descriptions(draw):
    """Space description files near the documented schema, and garbage."""
    block = st.fixed_dictionaries({
        "name": st.one_of(st.text(max_size=5), HOSTILE),
        "layers": st.one_of(st.integers(-2, 5), HOSTILE),
        "stride": st.one_of(st.sampled_from([1, 2]), HOSTILE),
        "widths": st.one_of(st.lists(st.integers(-8, 64), max_size=3), HOSTILE),
        "ops": st.one_of(st.lists(st.sampled_from(["conv_k3", "ds_k3", "ir_k3_e4", "er_k3_e8", "tk_k3_i0.25_o0.75",
                                                   "ir_k9_e4", "zz", ""]), max_size=3), HOSTILE),
    }, optional={"skippable": st.one_of(st.booleans(), HOSTILE)})
    description = draw(st.one_of(
        st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8), "blocks": st.lists(block, max_size=4)}),
        st.fixed_dictionaries({"name": HOSTILE, "blocks": HOSTILE}),
        st.dictionaries(st.text(max_size=5), HOSTILE, max_size=3),
        HOSTILE,
    ))
    if draw(st.booleans()):
        return json.dumps(description, allow_nan=True)
    text = yaml.safe_dump(description, allow_unicode=True)
    if draw(st.booleans()):  # a cut-off file
        text = text[: draw(st.integers(0, len(text)))]
    return text


@FUZZ
@given(text=space_descriptions(), suffix=st.sampled_from([".yaml", ".json"]))
# found by this test: a lone surrogate (legal in a JSON/YAML escape) in the error message
@example(text='{"name": "s", "blocks": [{"name": "\\ud800", "layers": 0, "stride": 1, "widths": [], "ops": []}]}',
         suffix=".yaml")
def test_fuzzed_space_files_give_a_summary_or_one_error_line(text, suffix, tmp_path_factory, cli):
    path = tmp_path_factory.mktemp("space") / f"space{suffix}"
    path.write_text(text)
    code, out, err = cli("spaces", path)
    assert_result_or_one_error(code, out, err, "spaces")


@pytest.mark.parametrize("argv", [
    ["data", "check", "no\nsuch dir"],
    ["data", "tile", "no\nsuch dir", "--out", "x"],
    ["spaces", "space\nfile.yaml"],
    ["train", "--data", "no\nsuch dir", "--out", "{tmp}/run"],
])
def test_a_path_with_a_line_break_still_gives_one_error_line(argv, tmp_path, cli):
    code, out, err = cli(*[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert_result_or_one_error(code, out, err, argv[0])
    assert code == 2 and ("no\\nsuch dir" in err or "space\\nfile" in err)
