"""Edge TPU compatibility from the documented op table, and the edgetpu_compiler hook."""

import os
import stat
from pathlib import Path

import pytest

from tdbnas.export.edgetpu import compatibility, compile_model, parse_compiler_log

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.tflite


def test_parses_a_real_partially_mapped_log():
    report = parse_compiler_log((DATA / "edgetpu_compiler_frc.log").read_text())
    assert (report.subgraphs, report.ops_on_tpu, report.ops_on_cpu) == (1, 138, 3)
    assert report.on_chip_used == "7.14MiB" and report.off_chip_streamed == "6.63MiB"
    assert [row.split()[0] for row in report.unmapped] == ["RESHAPE", "CONCATENATION"]


def test_parses_a_real_fully_mapped_log_with_streaming():
    report = parse_compiler_log((DATA / "edgetpu_compiler_facenet.log").read_text())
    assert report.on_chip_remaining == "1.25KiB" and report.off_chip_streamed == "15.06MiB"
    assert report.unmapped == [] and report.ops_on_cpu is None  # the line is absent when all ops map


@pytest.fixture(scope="module")
def micromodels(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from tdbnas.latency.micromodels import build_micromodels
    from tdbnas.spaces import LayerConfig, parse_layer

    units = {"relu6": LayerConfig(parse_layer("er_k3_e4_c16"), 16, (16, 16), True),
             "hswish": LayerConfig(parse_layer("ir_k3_e4_c16_se0.25_hs"), 16, (16, 16), True)}
    built = build_micromodels(units.values(), tmp_path_factory.mktemp("mm"))
    return {name: built[unit.key].path for name, unit in units.items()}


def test_a_relu6_int8_layer_maps_fully(micromodels):
    report = compatibility(micromodels["relu6"])
    assert report.fully_mapped and report.on_tpu == report.ops > 0
    assert "all" in report.summary()


def test_hard_swish_splits_the_model_there(micromodels):
    report = compatibility(micromodels["hswish"])
    assert not report.fully_mapped
    assert report.first_cpu_op.op == "HARD_SWISH"
    assert report.on_tpu + report.cpu_after_split == report.ops
    assert "HARD_SWISH" in report.summary() and "run on the CPU" in report.summary()


def test_missing_compiler_says_how_to_install(tmp_path, monkeypatch, micromodels):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="edgetpu_compiler is not on PATH.*apt-get install edgetpu-compiler"):
        compile_model(micromodels["relu6"])


def test_compiler_is_called_with_an_argument_list_and_its_log_parsed(tmp_path, monkeypatch, micromodels):
    # A stand-in compiler on PATH: records its argv, writes the output file, prints a real log.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    script.write_text(f"""#!/bin/sh
printf '%s\\n' "$@" > {tmp_path / 'argv.txt'}
out="$3"; model="$4"; base=$(basename "$model" .tflite)
cp "$model" "$out/${{base}}_edgetpu.tflite"
cat {DATA / 'edgetpu_compiler_frc.log'}
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    report = compile_model(micromodels["relu6"], tmp_path / "out")
    argv = (tmp_path / "argv.txt").read_text().split("\n")
    assert argv[:3] == ["-s", "-o", str(tmp_path / "out")] and argv[3] == str(micromodels["relu6"])
    assert report.compiled is not None and report.compiled.exists() and report.ops_on_tpu == 138
