"""How well does the LUT predictor predict full int8 detectors on this CPU?

1. Profile the units of the chosen detectors (MobileDet references + random `tdb` members) with
   the local LiteRT runner and the default measurement protocol, into a fresh table.
2. Time every detector end to end as a full int8 TFLite model (same runner, same protocol).
3. Fit the calibration `a * sum + b` on a few detectors and report the error on the others
   (held out): mean / max relative error, Spearman and Kendall rank correlation; the raw sum
   (no calibration) too, whose ranks calibration cannot change.
4. `predict_many` throughput on random `tdb` members (cold: keys computed; warm: cached).

    python benchmarks/latency_predictor.py                       # 320x320, 10 random + references
    python benchmarks/latency_predictor.py --resolution 160 --random 12

The machine is shared and noisy: raw samples are kept in the JSON; rerunning reuses the
table (profiling and detector timings resume) unless --fresh.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "latency_predictor"
REFERENCES = ("mobiledet-edgetpu", "mobiledet-dsp", "mobiledet-gpu", "mobiledet-cpu")


def ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # average ranks for ties
        tied = values == value
        result[tied] = result[tied].mean()
    return result


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denominator = np.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return float((concordant - discordant) / denominator) if denominator else float("nan")


def errors(predicted: np.ndarray, measured: np.ndarray) -> dict:
    rel = np.abs(predicted - measured) / measured
    return {"mean_rel_error": float(rel.mean()), "max_rel_error": float(rel.max()),
            "median_rel_error": float(np.median(rel)), "spearman": spearman(predicted, measured),
            "kendall": kendall(predicted, measured), "n": len(measured)}


def throughput(resolution: int, count: int) -> dict:
    """archs/s of predict_many on a table holding every unit of the tdb space (values synthetic:
    the speed does not depend on them)."""
    import tempfile

    from tdbnas.latency.predictor import LatencyPredictor, unit_keys
    from tdbnas.latency.table import Entry, LatencyTable
    from tdbnas.latency.units import space_units
    from tdbnas.spaces import get_space

    space = get_space("tdb")
    with tempfile.TemporaryDirectory() as folder:
        table = LatencyTable(Path(folder) / "lut.sqlite")
        table.ensure_profile("synthetic", kind="modelled", runner="none")
        rng = np.random.default_rng(0)
        table.put_many(Entry("synthetic", "v", u.key, float(rng.uniform(0.1, 2)), "median", None, (), {}, "t")
                       for u in space_units(space, resolution))
        predictor = LatencyPredictor(table, "synthetic")
        archs = [space.sample(seed) for seed in range(count)]
        unit_keys.cache_clear()
        t0 = time.perf_counter()
        predictor.predict_many(archs, resolution)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        predictor.predict_many(archs, resolution)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for arch in archs[:2000]:
            predictor.predict(arch, resolution)
        loop = time.perf_counter() - t0
    return {"archs": count, "cold_archs_per_s": count / cold, "warm_archs_per_s": count / warm,
            "predict_loop_archs_per_s": min(count, 2000) / loop, "table_entries": len(predictor)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=320)
    parser.add_argument("--random", type=int, default=10, help="random tdb members (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", type=int, default=3, help="detectors the calibration is fitted on (default 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--throughput", type=int, default=20000, help="archs for the predict_many timing")
    parser.add_argument("--fresh", action="store_true", help="start from an empty table")
    args = parser.parse_args()

    from tdbnas.latency.predictor import LatencyPredictor, fit_calibration
    from tdbnas.latency.profiles import make_runner
    from tdbnas.latency.profiling import measure_detectors, profile_units, runtime_version_of
    from tdbnas.latency.table import LatencyTable
    from tdbnas.latency.units import units_of_archs
    from tdbnas.spaces import get_reference, get_space

    res = args.resolution
    lowering = "tdbnas.latency.micromodels (export's Keras lowering) + measure + runners.local"
    table_path = CACHE / f"lut-{res}.sqlite"
    if args.fresh and table_path.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(str(table_path) + suffix).unlink(missing_ok=True)
    table = LatencyTable(table_path)
    space = get_space("tdb")
    random_archs = [space.sample(args.seed + i) for i in range(args.random)]
    names = [f"tdb-random-{args.seed + i}" for i in range(args.random)] + list(REFERENCES)
    archs = random_archs + [get_reference(name).arch for name in REFERENCES]
    units = units_of_archs(archs, res)
    profile = f"cpu-t{args.threads}"

    with make_runner("local", threads=args.threads) as runner:
        environment = runner.environment()
        version = runtime_version_of(environment)
        before = table.count(profile, version) if table.has_profile(profile) else 0
        t0 = time.perf_counter()
        report = profile_units(units, table=table, profile=profile, runner=runner, cache_dir=CACHE / "micromodels",
                               device="cpu")
        profile_s = time.perf_counter() - t0
        print(report.summary(), file=sys.stderr)
        t0 = time.perf_counter()
        detectors = measure_detectors(archs, res, table=table, profile=profile, runner=runner,
                                      cache_dir=CACHE / "micromodels", device="cpu")
        detector_s = time.perf_counter() - t0

    predictor = LatencyPredictor(table, profile, runtime_version=version, calibrated=False)
    raw = np.array([predictor.predict(arch, res).raw_sum_ms for arch in archs])
    measured = np.array([d.value_ms for d in detectors])
    # Fit on the first --fit random members, evaluate on everything else (the references included).
    fit_idx = np.arange(args.fit)
    held = np.arange(args.fit, len(archs))
    a, b = fit_calibration(raw[fit_idx], measured[fit_idx])
    calibrated = a * raw + b
    a_all, b_all = fit_calibration(raw, measured)
    record = {
        "lowering": lowering, "resolution": res, "threads": args.threads, "runtime_version": version,
        "environment": environment,
        "profile_report": {"units": report.requested, "already": report.already, "measured": report.measured,
                           "seconds": report.seconds, "build_seconds": report.build_seconds,
                           "measure_seconds": report.measure_seconds, "entries_before": before},
        "profile_wall_s": profile_s, "detector_wall_s": detector_s,
        "calibration": {"a": a, "b": b, "fitted_on": [names[i] for i in fit_idx]},
        "calibration_all_points": {"a": a_all, "b": b_all},
        "held_out": errors(calibrated[held], measured[held]),
        "held_out_raw_sum": errors(raw[held], measured[held]),
        "all_raw_sum": errors(raw, measured),
        "all_fit_on_all": errors(a_all * raw + b_all, measured),
        "detectors": [{"name": n, "arch": arch.encode(), "raw_sum_ms": float(r), "predicted_ms": float(c),
                       "measured_ms": float(m), "held_out": bool(i >= args.fit), "spread": d.spread,
                       "samples_ms": list(d.samples)}
                      for i, (n, arch, r, c, m, d) in enumerate(zip(names, archs, raw, calibrated, measured,
                                                                    detectors))],
        "throughput": throughput(res, args.throughput),
    }
    write_results("latency_predictor", record, markdown(record))
    print(markdown(record))
    return 0


def _error_row(label: str, e: dict) -> str:
    return (f"| {label} | {100 * e['mean_rel_error']:.1f}% | {100 * e['max_rel_error']:.1f}% | "
            f"{e['spearman']:.3f} | {e['kendall']:.3f} | {e['n']} |")


def markdown(r: dict) -> str:
    t, p, cal = r["throughput"], r["profile_report"], r["calibration"]
    rows = "\n".join(f"| {d['name']} | {'held out' if d['held_out'] else 'fit'} | {d['raw_sum_ms']:.2f} | "
                     f"{d['predicted_ms']:.2f} | {d['measured_ms']:.2f} | "
                     f"{100 * (d['predicted_ms'] - d['measured_ms']) / d['measured_ms']:+.1f}% |"
                     for d in r["detectors"])
    res = f"{r['resolution']}x{r['resolution']}"
    return f"""Lowering and timing: {r['lowering']}.

Predicted vs measured end-to-end latency of full int8 SSDLite detectors at {res} on this CPU
(LiteRT, {r['threads']} thread(s), runtime `{r['runtime_version']}`), same runner and protocol for units and
detectors. Calibration `a*sum+b` fitted on {len(cal['fitted_on'])} detectors ({', '.join(cal['fitted_on'])}):
a = {cal['a']:.4f}, b = {cal['b']:.3f} ms.

| | mean rel. error | max rel. error | Spearman | Kendall | n |
|---|---|---|---|---|---|
{_error_row("held out, calibrated", r["held_out"])}
{_error_row("held out, raw sum of units", r["held_out_raw_sum"])}
{_error_row("all, calibration fitted on all", r["all_fit_on_all"])}

| detector | role | sum of units (ms) | predicted (ms) | measured (ms) | error |
|---|---|---|---|---|---|
{rows}

Profiling: {p['units']} units ({p['already']} already in the table, {p['measured']} measured) in
{p['seconds']:.0f} s (micro-model builds {p['build_seconds']:.0f} s, timing {p['measure_seconds']:.0f} s); detectors
built and timed in {r['detector_wall_s']:.0f} s (a rerun reuses both).

`predict_many` on {t['archs']} random `tdb` members ({t['table_entries']} entries): {t['cold_archs_per_s']:.0f}
archs/s cold (unit keys computed), {t['warm_archs_per_s']:.0f} archs/s warm (keys cached); `predict` in a loop
{t['predict_loop_archs_per_s']:.0f} archs/s.
"""


if __name__ == "__main__":
    sys.exit(main())
