"""`tdbnas run` with `latency.cost_model`: the fitted model is the run's latency constraint (its
budget rule, quantiles and report name come from it), and one fitted on other detectors is refused."""

import json

import pytest

from tdbnas.latency import cost_model as cm
from tdbnas.latency import modelled
from tdbnas.pipeline import run_pipeline
from tdbnas.pipeline.config import DEFAULTS, resolve
from tdbnas.spaces import get_space
from tdbnas.spaces.head import head_from_settings

pytestmark = [pytest.mark.torch]

TINY = {"resolution": 64, "device": {"name": "edgetpu"},
        "data": {"synth": {"num_train": 16, "num_val": 4, "image_size": 64}},
        "references": ["mobiledet-edgetpu", "mobilenetv2"]}


@pytest.mark.slow
def test_the_latency_stage_takes_a_fitted_cost_model(tmp_path):
    out, path = tmp_path / "run", tmp_path / "dsp-lite.json"
    config = resolve(None, {**TINY, "out": str(out), "latency": {"cost_model": str(path)}})
    run_pipeline(config, until="data", log=lambda message: None)  # the class count sets the head
    classes = json.loads((out / "data" / "stage.json").read_text())["num_classes"]
    head = head_from_settings(DEFAULTS["head"], classes)  # the head the run builds
    space = get_space("tdb-lite")
    result = cm.fit(space, 40, lambda arch: modelled.modelled_detector_ms(arch, 64, "dsp", head=head).total_ms,
                    seed=1, resolution=64, head=head)
    result.model.save(path)
    run_pipeline(config, until="latency", log=lambda message: None)
    stage = json.loads((out / "latency" / "stage.json").read_text())
    assert stage["profile"] == "learned:dsp-lite" and stage["kind"] == "learned" and stage["calibration"] is None
    quantiles = stage["space_latency_quantiles_ms"]
    assert quantiles["0.0"] < stage["budget_ms"] == quantiles["0.5"] < quantiles["1.0"]
    assert stage["references_ms"] == {}  # neither reference is a member of tdb-lite: a cost model cannot price them

    other = tmp_path / "other"
    wrong = result.model.save(tmp_path / "wrong.json")
    config = resolve(None, {**TINY, "out": str(other), "resolution": 96, "data": {"synth": {"image_size": 96}},
                            "latency": {"cost_model": str(wrong)}})
    with pytest.raises(Exception, match="fitted on 64x64 detectors"):
        run_pipeline(config, until="latency", log=lambda message: None)
