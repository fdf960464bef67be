"""`tdbnas search`: a run with a synthetic fitness injected in place of the supernet
(`tdbnas.cli.search.fitness_factory`), resume, and one-line errors."""

import json
import re
import sys

import pytest

from tdbnas.cli.main import main
from tdbnas.latency.predictor import LatencyPredictor
from tdbnas.latency.table import LatencyTable
from tdbnas.search import min_latency
from tdbnas.spaces import ArchSpec, SSDLiteHead, detector_cost, get_space

SMALL = ["--generations", "2", "--population", "8", "--parents", "2", "--mutations", "3", "--crossovers", "3"]




def test_search_writes_the_run_and_resumes(tmp_path, synthetic, cli):
    argv = ["search", "--space", "tdb", "--profile", "edgetpu", "--budget-ms", "9", "--profile", "dsp",
            "--budget-ms", "20", "--table", tmp_path / "lut.sqlite", "--out", tmp_path / "run", *SMALL, "--seed", "4"]
    code, out, err = cli(*argv)
    assert code == 0, err
    assert re.search(r"best score 0\.\d{4} \(edgetpu \d\.\d\d ms, dsp \d+\.\d\d ms; .* after 16 evaluations", out)
    assert "generation 2/2" in err
    best = (tmp_path / "run" / "best_arch.txt").read_text().strip()
    assert best in out and get_space("tdb").contains(ArchSpec.parse(best))
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["best"]["latency_ms"]["edgetpu"] <= 9 and record["best"]["latency_ms"]["dsp"] <= 20
    assert record["evaluated_in_last_session"] == 16 and record["settings"]["seed"] == 4
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["command"]["profile"] == ["edgetpu", "dsp"] and config["command"]["budget_ms"] == [9.0, 20.0]
    assert (tmp_path / "run" / "search.png").stat().st_size > 10_000

    code, out, err = cli(*argv)  # the same command again: everything comes from the run database
    assert code == 0 and "resuming" in err
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["resumed"] and record["evaluated_in_last_session"] == 0 and record["best"]["arch"] == best


def test_unreachable_budget_is_one_line_with_the_smallest_latency(tmp_path, synthetic, cli):
    code, out, err = cli("search", "--space", "tdb", "--profile", "edgetpu", "--budget-ms", "1",
                         "--table", tmp_path / "lut.sqlite", "--out", tmp_path / "run", *SMALL)
    with LatencyTable(tmp_path / "lut.sqlite") as table:
        smallest = min_latency(get_space("tdb"), LatencyPredictor(table, "edgetpu"), 320).value
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"tdbnas search: error: no architecture of space tdb fits edgetpu ≤ 1.0 ms: the smallest "
                          f"predicted latency is {smallest:.2f} ms (modelled profile, 320x320, 90 classes; reached by ")
    assert not (tmp_path / "run").exists()


def test_argument_errors(tmp_path, synthetic, cli):
    table = ["--table", tmp_path / "lut.sqlite"]
    code, _, err = cli("search", "--profile", "edgetpu", "--budget-ms", "7", "--profile", "dsp", *table)
    assert code == 2 and "2 --profile but 1 --budget-ms" in err
    code, _, err = cli("search", *table)
    assert code == 2 and "at least one --profile" in err
    code, _, err = cli("search", "--profile", "edgetpu", "--budget-ms", "7", "--population", "10", *table)
    assert code == 2 and "exceed the population" in err


def test_the_supernet_signal_needs_a_checked_supernet(tmp_path, monkeypatch, cli):
    base = ["search", "--profile", "edgetpu", "--budget-ms", "7", "--table", tmp_path / "lut.sqlite"]
    code, _, err = cli(*base, "--signal", "supernet")
    assert code == 2 and "--signal supernet needs --supernet CKPT" in err
    code, _, err = cli(*base, "--signal", "naswot")
    assert code == 2 and "the naswot signal scores real images: give the dataset (--data DIR)" in err
    code, _, err = cli(*base, "--signal", "naswot", "--data", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in err
    code, _, err = cli(*base, "--supernet", tmp_path / "missing.pt")
    assert code == 2 and "does not exist" in err
    checkpoint = tmp_path / "supernet.pt"
    checkpoint.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tdbnas.search.fitness", None)  # as if the module were absent
    code, _, err = cli(*base, "--supernet", checkpoint)
    assert code == 2 and "SupernetEvaluator) cannot be imported" in err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["search", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "examples:" in out and "--budget-ms" in out and "--ray" in out


def test_a_cost_signal_search_with_a_head_names_its_signal_and_keeps_its_run(tmp_path, cli):
    """No supernet: `--signal madds` ranks by detector MAdds with the given head; the output and
    result files say which signal ranked, and the run directory refuses another signal."""
    argv = ["search", "--space", "tdb-lite", "--resolution", "160", "--num-classes", "6", "--profile", "edgetpu",
            "--budget-ms", "20", "--table", tmp_path / "lut.sqlite", "--out", tmp_path / "run", *SMALL,
            "--signal", "madds", "--head", "{from_features: [C3, C4, C5], extra_depths: [512, 256, 256]}"]
    code, out, err = cli(*argv)
    assert code == 0, err
    assert "Candidates were ranked by `madds`" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["signal"] == "madds" and config["command"]["head_settings"].startswith("{from_features")
    assert json.loads((tmp_path / "run" / "result.json").read_text())["signal"] == "madds"
    best = ArchSpec.parse((tmp_path / "run" / "best_arch.txt").read_text().strip())
    head = SSDLiteHead(num_classes=6, from_features=("C3", "C4", "C5"), extra_depths=(512, 256, 256))
    assert f"best score {detector_cost(best, 160, 6, head=head).total.madds:.4f}" in out  # the C3 head's MAdds
    code, _, err = cli(*[a if a != "madds" else "params" for a in argv])
    assert code == 2 and "holds a different search" in err and "fitness" in err
    code, _, err = cli(*argv[:-1], "[C3]")
    assert code == 2 and "--head must be a mapping" in err


def test_without_data_a_default_that_scores_images_falls_back_and_says_so(tmp_path, monkeypatch, cli):
    """When the measured default (here NASWOT) needs real images and `--data` is absent, the search
    ranks by the best measured data-free signal and says so, instead of failing."""
    import tdbnas.cli.search as search_cli
    import tdbnas.search.signals as signals

    monkeypatch.setattr(signals, "shipped_fidelity", lambda: {"default": "naswot", "default_without_data": "params",
                                                              "signals": {}})
    monkeypatch.setattr(signals, "DEFAULT_SIGNAL", "naswot")
    monkeypatch.setattr(search_cli, "DEFAULT_SIGNAL", "naswot")
    code, out, err = cli("search", "--space", "tdb-lite", "--resolution", "160", "--num-classes", "6", "--profile",
                         "edgetpu", "--budget-ms", "20", "--table", tmp_path / "lut.sqlite", "--out", tmp_path / "run",
                         *SMALL)
    assert code == 0, err
    assert "default signal naswot scores real images and no --data was given; ranking by params" in err
    assert json.loads((tmp_path / "run" / "result.json").read_text())["signal"] == "params"
