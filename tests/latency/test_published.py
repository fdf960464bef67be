"""Published Edge TPU latencies: the reference data parses into the architecture language, the
SSD and classifier heads are counted by hand, and the Coral profiles' shipped constants and
leave-one-out errors are what the fit to the published table gives."""

import numpy as np
import pytest

from tdbnas.latency import modelled
from tdbnas.latency import published as pub
from tdbnas.spaces import ArchSpec, SSDLiteHead, head_primitives
from tdbnas.spaces.primitives import classifier_primitives


@pytest.fixture(scope="module")
def data():
    return pub.load_published()


def test_every_listed_model_is_written_in_the_language_with_a_source(data):
    names = {m.name for m in data.models}
    assert {"mobilenet-v1-224", "mobilenet-v2-ssd-300", "efficientnet-edgetpu-m"} <= names
    for model in data.models:
        assert model.source in data.sources and set(model.latency_ms) <= set(data.profiles)
        assert ArchSpec.parse(model.arch.encode()) == model.arch and model.ops()
    assert len(data.points("coral-usb")) == len(data.points("coral-devboard")) == 6
    assert all(entry["why"] for entry in data.not_expressible) and len(data.not_expressible) == 12


def test_ssd_and_classifier_heads_by_hand(data):
    mnv1 = next(m for m in data.models if m.name == "mobilenet-v1-ssd-300")
    assert mnv1.anchors() == 19 * 19 * 3 + (10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1) * 6 == 1917
    ops = head_primitives(SSDLiteHead(), mnv1.arch, 300, depthwise=False, box_kernel=1)
    first_extra = ops[:2]  # 1x1 1024 -> 256 at 10x10, then 3x3 stride-2 regular conv 256 -> 512 at 5x5
    assert [op.madds for op in first_extra] == [10 * 10 * 1024 * 256, 5 * 5 * 9 * 256 * 512]
    class0 = next(op for op in ops if op.name == "class0")  # 1x1 conv on C4 (512 ch, 19x19), 3 anchors x 91
    assert (class0.kernel, class0.cin, class0.cout, class0.madds) == (1, 512, 273, 19 * 19 * 512 * 273)
    gap, logits = classifier_primitives(1280, (7, 7), 1001)
    assert gap.op == "gap" and logits.madds == 1280 * 1001 and logits.params == 1280 * 1001 + 1001


@pytest.mark.parametrize("profile", ["coral-usb", "coral-devboard"])
def test_the_shipped_coral_constants_are_the_fit_and_its_leave_one_out_error(data, profile):
    fitted = pub.fit_profile(data, profile)
    device = modelled.DEVICES[profile]
    assert device.chip == "edgetpu" and device.param_cache_bytes == modelled.EDGETPU_PARAM_CACHE_BYTES
    np.testing.assert_allclose([device.ms_per_gmac, device.ms_per_mb], [fitted.ms_per_gmac, fitted.ms_per_mb],
                               rtol=1e-3)
    loo = pub.leave_one_out(data, profile)
    median = float(np.median([abs(r.error_pct) for r in loo]))
    assert abs(median - modelled.CORAL_LOO_MEDIAN_PCT[profile]) < 0.01
    assert len(loo) >= 6 and median <= 20.0  # the bar
    assert f"{median:.1f}%" in modelled.MODELLED_PROFILES[profile]["note"]


def test_the_fit_respects_the_peak_and_needs_points(data):
    fitted = pub.fit_profile(data, "pixel4-edgetpu", anchors=False)
    assert fitted.ms_per_gmac >= 1e12 / modelled.EDGETPU_PEAK_MACS_PER_S  # the 4 TOPS bound holds
    with pytest.raises(ValueError, match="at least one"):
        pub.fit_device([])


def test_predictions_on_a_coral_profile_say_modelled_with_the_held_out_error(tmp_path, capsys):
    from tdbnas.cli.main import main

    code = main(["predict", "--arch", "mobiledet-edgetpu", "--profile", "coral-devboard", "--resolution", "320",
                 "--table", str(tmp_path / "lut.sqlite")])
    out = capsys.readouterr().out
    assert code == 0 and "MODELLED, not measured; leave-one-out median error 13.7% on published models" in out
    code = main(["predict", "--arch", "mobiledet-edgetpu", "--profile", "edgetpu", "--table",
                 str(tmp_path / "lut.sqlite")])
    assert code == 0 and "MODELLED, not measured; no held-out error exists for its fit" in capsys.readouterr().out
