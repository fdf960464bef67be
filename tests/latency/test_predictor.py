"""The predictor: sums, vectorised batches, missing-entry errors, calibration, feasibility."""

import numpy as np
import pytest

from tdbnas.latency.predictor import (
    LatencyPredictor,
    MissingEntriesError,
    all_budgets,
    calibrate,
    fit_calibration,
    held_out_errors,
    unit_keys,
)
from tdbnas.latency.table import Calibration, Entry, LatencyTable
from tdbnas.latency.units import detector_units, space_units
from tdbnas.spaces import SSDLiteHead, get_reference, get_space

RES = (320, 320)


def fill(table, profile, units, seed=0, version="v1", kind="measured"):
    rng = np.random.default_rng(seed)
    table.ensure_profile(profile, kind=kind, runner="fake", environment={"device": "cpu"})
    table.put_many(Entry(profile, version, u.key, float(rng.uniform(0.05, 3.0)), "median", None, (), {}, "t")
                   for u in units)


@pytest.fixture(scope="module")
def tdb_table(tmp_path_factory):
    table = LatencyTable(tmp_path_factory.mktemp("lut") / "lut.sqlite")
    fill(table, "cpu", space_units(get_space("tdb"), RES))
    return table


@pytest.mark.parametrize("space, resolution, head, wm", [
    ("tdb", (320, 320), SSDLiteHead(), 1.0),
    ("ibn-cpu", (640, 320), SSDLiteHead(num_classes=5), 0.75),
    ("detnas-small", (160, 160), SSDLiteHead(), 1.0),
])
def test_fast_unit_keys_equal_detector_units(space, resolution, head, wm):
    space = get_space(space)
    for seed in range(40):
        arch = space.sample(seed)
        expected = tuple(u.key for u in detector_units(arch, resolution, head=head, width_multiplier=wm))
        assert unit_keys(arch, resolution, head, wm) == expected


def test_predict_sums_the_entries_of_the_detector_units(tdb_table):
    predictor = LatencyPredictor(tdb_table, "cpu", calibrated=False)
    arch = get_reference("mobiledet-edgetpu").arch
    prediction = predictor.predict(arch, 320)
    values = tdb_table.values("cpu")
    keys = [u.key for u in detector_units(arch, RES)]
    assert [k for k, _ in prediction.per_unit] == keys
    assert prediction.raw_sum_ms == pytest.approx(sum(values[k] for k in keys))
    assert prediction.total_ms == prediction.raw_sum_ms and prediction.calibration is None
    assert prediction.kind == "measured" and prediction.runtime_version == "v1"


def test_predict_many_equals_predict_in_a_loop(tdb_table):
    tdb_table.set_calibration("cpu", Calibration(1.3, 2.0, "v1"))
    predictor = LatencyPredictor(tdb_table, "cpu")
    space = get_space("tdb")
    archs = [space.sample(seed) for seed in range(200)] + [get_reference("mobiledet-dsp").arch]
    batch = predictor.predict_many(archs, RES)
    loop = np.array([predictor.predict(arch, RES).total_ms for arch in archs])
    np.testing.assert_allclose(batch, loop, rtol=1e-12)
    raw = predictor.predict_many(archs, RES, calibrated=False)
    np.testing.assert_allclose(batch, 1.3 * raw + 2.0, rtol=1e-12)
    assert predictor.predict_many([], RES).shape == (0,)
    tdb_table.set_calibration("cpu", None)


def test_missing_entries_error_lists_keys_and_the_profile_command(tmp_path):
    table = LatencyTable(tmp_path / "lut.sqlite")
    arch = get_reference("mobiledet-edgetpu").arch
    units = detector_units(arch, RES)
    fill(table, "cpu", units[3:])  # the first three units were never profiled
    predictor = LatencyPredictor(table, "cpu")
    with pytest.raises(MissingEntriesError) as info:
        predictor.predict(arch, RES)
    text = str(info.value)
    assert info.value.keys == tuple(u.key for u in units[:3])
    assert all(u.key in text for u in units[:3]) and "3 units" in text
    assert (f"tdbnas profile --arch {arch.encode()} --resolution 320 --device cpu --profile cpu "
            f"--table {tmp_path / 'lut.sqlite'}") in text
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    others = [get_space("tdb").sample(seed) for seed in range(5)]
    with pytest.raises(MissingEntriesError, match=r"and \d+ more.*--space SPACE"):
        predictor.predict_many([arch] + others, RES)


def test_calibration_recovers_a_known_line_and_is_stored_with_the_profile(tdb_table):
    predictor = LatencyPredictor(tdb_table, "cpu", calibrated=False)
    space = get_space("tdb")
    archs = [space.sample(100 + seed) for seed in range(4)]
    # Random members' sums are bunched (< 1.5x apart): the stored line is a scale only.
    measurements = [(arch, RES, 1.7 * predictor.predict(arch, RES).raw_sum_ms) for arch in archs]
    calibration = calibrate(tdb_table, "cpu", measurements)
    assert (calibration.a, calibration.b) == (pytest.approx(1.7), 0.0) and "kept the line" in calibration.note
    assert tdb_table.profile("cpu").calibration == calibration and len(calibration.points) == 4
    predictor.reload()
    assert predictor.calibration is None  # this predictor was asked for raw sums
    calibrated = LatencyPredictor(tdb_table, "cpu")
    assert calibrated.predict(archs[0], RES).total_ms == pytest.approx(measurements[0][2])
    # A calibration fitted for another runtime does not apply.
    tdb_table.set_calibration("cpu", Calibration(2.0, 1.0, "v0"))
    assert LatencyPredictor(tdb_table, "cpu").calibration is None
    tdb_table.set_calibration("cpu", None)


def test_a_line_that_loses_to_the_raw_sum_on_held_out_detectors_is_not_stored(tdb_table):
    predictor = LatencyPredictor(tdb_table, "cpu", calibrated=False)
    archs = [get_space("tdb").sample(200 + seed) for seed in range(5)]
    raw = [predictor.predict(arch, RES).raw_sum_ms for arch in archs]
    # Sums that are right to within timing noise: a line through 4 of them mispredicts the 5th.
    noise = [1.03, 0.97, 1.02, 0.96, 1.04]
    measurements = [(arch, RES, r * n) for arch, r, n in zip(archs, raw, noise)]
    fitted_error, raw_error = held_out_errors(raw, [m[2] for m in measurements])
    assert fitted_error > raw_error == pytest.approx(0.03, abs=0.002)
    calibration = calibrate(tdb_table, "cpu", measurements)
    assert (calibration.a, calibration.b) == (1.0, 0.0) and "kept the raw sum" in calibration.note
    assert held_out_errors(raw[:2], raw[:2]) is None  # two points cannot be held out
    tdb_table.set_calibration("cpu", None)


def test_fit_keeps_the_fixed_part_non_negative():
    a, b = fit_calibration([10.0, 20.0, 30.0], [15.0, 32.0, 49.0])  # exact line: 1.7 x - 2
    assert b == 0.0 and a == pytest.approx((10 * 15 + 20 * 32 + 30 * 49) / (100 + 400 + 900))
    assert fit_calibration([10.0], [12.0]) == (pytest.approx(1.2), 0.0)
    assert fit_calibration([10.0, 20.0, 30.0], [21.5, 38.5, 55.5]) == (pytest.approx(1.7), pytest.approx(4.5))
    # Sums bunched within 1.5x of each other: only the scale is fitted, even on an exact line.
    a, b = fit_calibration([10.0, 11.0, 12.0], [11.0, 12.0, 13.0])
    assert b == 0.0 and a == pytest.approx((110 + 132 + 156) / (100 + 121 + 144))
    with pytest.raises(ValueError, match="positive finite"):
        fit_calibration([10.0, 0.0], [1.0, 2.0])


def test_feasibility_predicates_constrain_sampling_on_several_profiles(tdb_table, tmp_path):
    fill(tdb_table, "edgetpu", space_units(get_space("tdb"), RES), seed=1, version="modelled-v1", kind="modelled")
    cpu, tpu = LatencyPredictor(tdb_table, "cpu"), LatencyPredictor(tdb_table, "edgetpu")
    space = get_space("tdb")
    archs = [space.sample(seed) for seed in range(100)]
    cpu_ms, tpu_ms = cpu.predict_many(archs, RES), tpu.predict_many(archs, RES)
    budget = all_budgets(cpu.as_feasibility(float(np.median(cpu_ms)), RES),
                         tpu.as_feasibility(float(np.median(tpu_ms)), RES))
    np.testing.assert_array_equal(budget.mask(archs), (cpu_ms <= np.median(cpu_ms)) & (tpu_ms <= np.median(tpu_ms)))
    constrained = space.with_feasibility(budget)
    for seed in range(10):
        arch = constrained.sample(seed)
        assert cpu.predict(arch, RES).total_ms <= np.median(cpu_ms)
        assert tpu.predict(arch, RES).total_ms <= np.median(tpu_ms)
        assert tpu.predict(arch, RES).kind == "modelled"
