"""`tdbnas search --cost-model FILE`: a fitted cost model as a latency constraint, paired with its
--budget-ms by position among the --profile constraints, refused for other detectors."""

import json

import numpy as np
import pytest

from tdbnas.latency import cost_model as cm
from tdbnas.latency import modelled
from tdbnas.search.rundb import RunDB
from tdbnas.spaces import get_space

SMALL = ["--generations", "2", "--population", "8", "--parents", "2", "--mutations", "3", "--crossovers", "3"]




@pytest.fixture(scope="module")
def npu_model(tmp_path_factory):
    """A stand-in device: 1.4x the modelled Edge TPU, fitted from 60 end-to-end samples of tdb-lite."""
    space = get_space("tdb-lite")
    result = cm.fit(space, 60, lambda arch: 1.4 * modelled.modelled_detector_ms(arch, 320, "edgetpu").total_ms,
                    holdout=0.2, seed=0, resolution=320, metadata={"profile": "npu"})
    return result.model.save(tmp_path_factory.mktemp("models") / "npu.json"), result


def test_search_keeps_every_candidate_within_the_cost_models_budget(tmp_path, synthetic, npu_model, cli):
    path, result = npu_model
    budget = float(np.median(result.data.latency_ms))
    code, out, err = cli("search", "--space", "tdb-lite", "--profile", "edgetpu", "--budget-ms", 30,
                         "--cost-model", path, "--budget-ms", budget, "--table", tmp_path / "lut.sqlite",
                         "--out", tmp_path / "run", *SMALL)
    assert code == 0, err
    assert "learned:npu" in out
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["best"]["latency_ms"]["learned:npu"] <= budget and record["best"]["latency_ms"]["edgetpu"] <= 30
    with RunDB(tmp_path / "run" / "search.sqlite") as db:
        evaluations = db.evaluations()
    assert len(evaluations) == 16 and all(e.latency_ms["learned:npu"] <= budget for e in evaluations)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["command"]["profile"] == ["edgetpu", f"cost-model:{path}"]
    assert config["command"]["budget_ms"] == [30.0, budget]


def test_a_cost_model_of_other_detectors_or_another_space_is_refused(tmp_path, synthetic, npu_model, cli):
    path, _ = npu_model
    common = ["--table", tmp_path / "lut.sqlite", "--out", tmp_path / "run", *SMALL]
    code, _, err = cli("search", "--space", "tdb-lite", "--resolution", 160, "--cost-model", path,
                       "--budget-ms", 9, *common)
    assert code == 2 and "was fitted on 320x320 detectors at width multiplier 1, not 160x160" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli("search", "--space", "tdb", "--cost-model", path, "--budget-ms", 9, *common)
    assert code == 2 and "fitted on space 'tdb-lite', not 'tdb'" in err
    code, _, err = cli("search", "--space", "tdb-lite", "--cost-model", tmp_path / "none.json",
                       "--budget-ms", 9, *common)
    assert code == 2 and "does not exist" in err
    code, _, err = cli("search", "--space", "tdb-lite", "--cost-model", path, *common)
    assert code == 2 and "1 --profile but 0 --budget-ms" in err
