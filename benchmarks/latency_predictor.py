"""How well does the LUT predictor predict full int8 detectors on this CPU?

The latency issue's acceptance: int8, XNNPACK, 1 thread, 320x320, full SSDLite detector without
the post-processing op, >= 50 random `tdb` architectures: predicted vs measured end-to-end
latency within +-10 % for >= 95 % of them, Spearman >= 0.95; also the median absolute error and
the noise floor (the spread of repeated measurements of the same model).

1. Calibration: `a * sum + b` is fitted on `--fit` random members that are *not* evaluated.
2. Validation: `--random` other random members plus the MobileDet references are profiled
   (their units), timed end to end and compared with the calibrated prediction
   (`tdbnas.latency.validation`, the code behind `tdbnas latency validate`).
3. Noise floor: `--repeat` detectors are timed again `--repeats` times with fresh interpreters.
4. `predict_many` throughput on random `tdb` members.

    python benchmarks/latency_predictor.py                          # 50 random + 4 references at 320
    python benchmarks/latency_predictor.py --random 10 --resolution 160 --name latency_predictor_smoke

Rerunning reuses the table (profiling and detector timings resume) unless --fresh.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "latency_predictor"
REFERENCES = ("mobiledet-edgetpu", "mobiledet-dsp", "mobiledet-gpu", "mobiledet-cpu")


def throughput(resolution: int, count: int) -> dict:
    """archs/s of predict_many on a table holding every unit of the tdb space (synthetic values:
    the speed does not depend on them)."""
    import tempfile

    from tdbnas.latency.predictor import LatencyPredictor, unit_keys
    from tdbnas.latency.space_predictor import SpacePredictor
    from tdbnas.latency.table import Entry, LatencyTable
    from tdbnas.latency.units import space_units
    from tdbnas.spaces import get_space

    space = get_space("tdb")
    with tempfile.TemporaryDirectory() as folder:
        table = LatencyTable(Path(folder) / "lut.sqlite")
        table.ensure_profile("synthetic", kind="measured", runner="none")
        rng = np.random.default_rng(0)
        table.put_many(Entry("synthetic", "v", u.key, float(rng.uniform(0.1, 2)), "min", None, (), {}, "t")
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
        genomes_predictor = SpacePredictor(predictor, space, resolution)
        build = time.perf_counter() - t0
        genomes = np.array([space.random_genome(seed) for seed in range(max(count, 100_000))])
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            genomes_predictor.predict_genomes(genomes)
            samples.append(len(genomes) / (time.perf_counter() - t0))
    return {"archs": count, "cold_archs_per_s": count / cold, "warm_archs_per_s": count / warm,
            "genomes": len(genomes), "genomes_per_s_median": statistics.median(samples),
            "genomes_per_s_samples": samples, "genome_tables_build_s": build}


def noise_floor(archs, resolution: int, runner, cache: Path, repeats: int) -> list[dict]:
    """Time the same detector files again with fresh interpreters: how much the measurement moves."""
    from tdbnas.latency.measure import MeasureProtocol, measure
    from tdbnas.latency.micromodels import build_detector_tflite

    rows = []
    for arch in archs:
        path = cache / f"noise-{hashlib.sha1(arch.encode().encode()).hexdigest()[:16]}.tflite"
        if not path.exists():
            build_detector_tflite(arch, resolution, path)
        values = [measure(runner, path, MeasureProtocol()).value_ms for _ in range(repeats)]
        rows.append({"arch": arch.encode(), "values_ms": values,
                     "relative_range": (max(values) - min(values)) / min(values)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=320)
    parser.add_argument("--random", type=int, default=50, help="random tdb members validated (default 50)")
    parser.add_argument("--fit", type=int, default=5, help="other random members the calibration is fitted on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="detectors re-timed for the noise floor")
    parser.add_argument("--repeats", type=int, default=3, help="times each of them is re-timed")
    parser.add_argument("--throughput", type=int, default=20000, help="archs for the predict_many timing")
    parser.add_argument("--name", default="latency_predictor", help="results file name")
    parser.add_argument("--fresh", action="store_true", help="start from an empty table")
    parser.add_argument("--table", help="latency table to use (default: this benchmark's own); e.g. the one "
                                        "latency_profile_space.py filled, so the units are not profiled twice")
    args = parser.parse_args()

    from tdbnas.latency.predictor import calibrate
    from tdbnas.latency.profiles import make_runner
    from tdbnas.latency.profiling import measure_detectors, profile_units, runtime_version_of
    from tdbnas.latency.table import LatencyTable
    from tdbnas.latency.units import units_of_archs
    from tdbnas.latency.validation import scatter_plot, validate
    from tdbnas.spaces import get_reference, get_space

    res = (args.resolution, args.resolution)
    table_path = Path(args.table) if args.table else CACHE / f"lut-{args.resolution}.sqlite"
    if args.fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(str(table_path) + suffix).unlink(missing_ok=True)
    table = LatencyTable(table_path)
    space = get_space("tdb")
    fit_archs = [space.sample(10_000 + args.seed + i) for i in range(args.fit)]
    archs = [space.sample(args.seed + i) for i in range(args.random)] + [get_reference(n).arch for n in REFERENCES]
    profile, cache = "cpu", CACHE / "micromodels"
    started = time.perf_counter()
    with make_runner("local", threads=1) as runner:
        environment = runner.environment()
        version = runtime_version_of(environment)
        profile_units(units_of_archs(fit_archs, res), table=table, profile=profile, runner=runner, cache_dir=cache,
                      device="cpu")
        fitted = measure_detectors(fit_archs, res, table=table, profile=profile, runner=runner, cache_dir=cache,
                                   device="cpu")
        calibration = calibrate(table, profile, [(m.arch, m.resolution, m.value_ms) for m in fitted],
                                runtime_version=version)
        result = validate(archs, res, table=table, profile=profile, runner=runner, cache_dir=cache)
        noise = noise_floor(archs[:args.repeat], args.resolution, runner, CACHE / "noise", args.repeats)
    seconds = time.perf_counter() - started
    summary = result.summary()
    raw = validate_raw(result.points)
    plot = scatter_plot(result.points, Path(__file__).resolve().parent / "results" / f"{args.name}.png",
                        title=f"LUT predictor vs measured, {args.resolution}x{args.resolution}, 1 thread")
    record = {"resolution": args.resolution, "runtime_version": version, "environment": environment,
              "calibration": {"a": calibration.a, "b": calibration.b, "fitted_on": [a.encode() for a in fit_archs]},
              "summary": summary, "raw_sum_summary": raw, "seconds": seconds, "plot": plot.name,
              "noise_floor": {"median_relative_range": statistics.median(r["relative_range"] for r in noise),
                              "rows": noise},
              "points": result.to_json()["points"], "throughput": throughput(args.resolution, args.throughput)}
    markdown = render(record, args)
    write_results(args.name, record, markdown)
    print(markdown)
    return 0


def validate_raw(points) -> dict:
    from tdbnas.latency.validation import error_summary

    return error_summary([p.raw_sum_ms for p in points], [p.measured_ms for p in points])


def _summary_row(label: str, s: dict) -> str:
    return (f"| {label} | {s['n']} | **{100 * s['within_10']:.1f} %** | {100 * s['within_5']:.1f} % | "
            f"{100 * s['median_abs_error']:.1f} % | {100 * s['max_abs_error']:.1f} % | **{s['spearman']:.3f}** | "
            f"{s['kendall']:.3f} |")


def _point_row(p: dict) -> str:
    error = (p["predicted_ms"] - p["measured_ms"]) / p["measured_ms"]
    return (f"| `{p['arch'][:60]}...` | {p['raw_sum_ms']:.2f} | {p['predicted_ms']:.2f} | {p['measured_ms']:.2f} | "
            f"{100 * error:+.1f}% |")


def render(r: dict, args: argparse.Namespace) -> str:
    t, noise, calibration = r["throughput"], r["noise_floor"], r["calibration"]
    rows = "\n".join(_point_row(p) for p in r["points"])
    return f"""Runtime `{r['runtime_version']}`, {r['resolution']}x{r['resolution']}, int8, 1 thread, full SSDLite
detector without the post-processing op. Calibration `a*sum+b` fitted on {len(calibration['fitted_on'])} other
random members: a = {calibration['a']:.4f}, b = {calibration['b']:.3f} ms. Total time {r['seconds'] / 60:.1f} min.

| | n | within +-10 % | within +-5 % | median abs. error | max abs. error | Spearman | Kendall |
|---|---|---|---|---|---|---|---|
{_summary_row("calibrated prediction", r["summary"])}
{_summary_row("raw sum of units", r["raw_sum_summary"])}

Noise floor: {args.repeat} detectors re-timed {args.repeats} times each with fresh interpreters; median relative
range {100 * noise['median_relative_range']:.1f} % (rows in the JSON).

Batch prediction: `SpacePredictor.predict_genomes` (per-position tables, what search uses) on {t['genomes']}
random `tdb` genomes: **{t['genomes_per_s_median']:,.0f} genomes/s** (median of 5; tables built in
{t['genome_tables_build_s']:.1f} s). `predict_many` on {t['archs']} decoded architectures:
{t['cold_archs_per_s']:.0f} archs/s cold (unit keys computed), {t['warm_archs_per_s']:.0f} archs/s warm.

![scatter]({r['plot']})

| architecture | sum of units (ms) | predicted (ms) | measured (ms) | error |
|---|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
    sys.exit(main())
