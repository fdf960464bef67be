"""The `tdbnas` command: output, clear errors without tracebacks, and no framework at import."""

import json
import subprocess
import sys

import pytest

from tdbnas.cli.main import main
from tdbnas.spaces import ArchSpec, get_reference


def test_arch_show_prints_the_layer_table_and_costs(cli):
    code, out, _ = cli("arch", "show", "mobiledet-edgetpu")
    assert code == 0
    assert get_reference("mobiledet-edgetpu").arch.encode() in out
    assert "2034 anchors" in out
    assert "tk_k3_i0.25_o0.75_c16" in out and "8>16" in out  # Tucker ranks in the inner column
    assert "detector:     1.533 B MAdds" in out


def test_arch_show_accepts_strings_json_files_and_non_square_inputs(tmp_path, cli):
    text = get_reference("mobiledet-cpu").arch.encode()
    code, out, _ = cli("arch", "show", text, "--resolution", "640x320", "--json")
    record = json.loads(out)
    assert code == 0 and record["name"] is None
    assert [(f["hw"], f["channels"]) for f in record["features"][:2]] == [([40, 20], 72), ([20, 10], 144)]
    assert ArchSpec.from_json(record["spec"]).encode() == text
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(record["spec"]))
    code, out, _ = cli("arch", "show", str(path))
    assert code == 0 and text in out


@pytest.mark.parametrize("argv, fragment", [
    (["arch", "show", "conv_k3_s2_c32/ir_k3_e4_c16,iq_k3_c8"],
     "bad token 'iq_k3_c8' at block 1, layer 2, character 28"),
    (["arch", "show", "mobiledet-edgtpu"], "did you mean mobiledet-edgetpu"),
    (["spaces", "nope"], "neither a registered space"),
    (["spaces", "missing.yaml"], "cannot read space description"),
])
def test_bad_input_gives_a_clear_error_and_no_traceback(argv, fragment, cli):
    code, out, err = cli(*argv)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err


def test_bad_arguments_are_reported_by_argparse(capsys):
    with pytest.raises(SystemExit) as info:
        main(["arch", "show", "mobiledet-cpu", "--resolution", "big"])
    assert info.value.code == 2
    assert "resolution must be N or HxW" in capsys.readouterr().err


def test_arch_list_and_spaces(cli):
    code, out, _ = cli("arch", "list")
    assert code == 0 and "mobiledet-dsp" in out and "detnas-300m" in out
    code, out, _ = cli("spaces", "--json")
    rows = {row["name"]: row for row in json.loads(out)["spaces"]}
    assert code == 0 and set(rows) >= {"ibn", "ibn-fused", "tdb", "ibn-cpu", "detnas-small", "detnas-large"}
    assert rows["detnas-small"]["size"] == 4 ** 20
    code, out, _ = cli("spaces", "tdb", "--sample", "2", "--seed", "5")
    assert code == 0 and "b3.2" in out and "sample 1 (seed 6)" in out


def test_user_space_files_work_in_the_cli(tmp_path, cli):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nblocks:\n"
                    "  - {name: stem, layers: 1, stride: 2, widths: [16], ops: [conv_k3]}\n"
                    "  - {name: b1, layers: 2, stride: 2, widths: [16, 24], ops: [ir_k3_e4, er_k3_e4],"
                    " skippable: true}\n")
    code, out, _ = cli("spaces", str(path), "--json")
    assert code == 0 and json.loads(out)["size"] == 2 * 2 * 3


def test_importing_the_library_and_the_cli_loads_no_framework():
    code = ("import sys, tdbnas.spaces, tdbnas.cli.main; "
            "from tdbnas.spaces import get_space, get_reference, detector_cost; "
            "get_space('tdb').layer_configs(320); detector_cost(get_reference('mobiledet-gpu').arch); "
            "loaded = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; "
            "print(','.join(loaded))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_console_script_help_has_examples():
    result = subprocess.run([sys.executable, "-m", "tdbnas.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "examples:" in result.stdout
