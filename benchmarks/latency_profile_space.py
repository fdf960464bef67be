"""Profile every distinct unit of a search space on this CPU from an empty table; where the time goes.

The latency issue's acceptance: every distinct op of the default TDB space at 320x320 on this CPU
in <= 15 minutes from an empty table (int8, XNNPACK, 1 thread), with the ops count.

    python benchmarks/latency_profile_space.py                      # tdb at 320, fresh table and cache
    python benchmarks/latency_profile_space.py --space ibn --resolution 160 --name latency_profile_ibn160

Units are grouped by kind in the report (backbone layer kinds, SSD extras, predictors) with
their build and timing seconds, so it shows what dominates.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "latency_profile_space"
TARGET_MINUTES = 15.0


def kind_of(key: str) -> str:
    return key.split("@")[0].split("_")[0] if not key.startswith("ssd_") else "_".join(key.split("_")[:2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tdb")
    parser.add_argument("--resolution", type=int, default=320)
    parser.add_argument("--workers", type=int, default=1, help="parallel micro-model builds")
    parser.add_argument("--keep-cache", action="store_true", help="reuse built micro-models (times timing only)")
    parser.add_argument("--name", default="latency_profile_space")
    args = parser.parse_args()

    import functools

    from tdbnas.latency.micromodels import build_micromodels
    from tdbnas.latency.profiles import make_runner
    from tdbnas.latency.profiling import profile_units
    from tdbnas.latency.table import LatencyTable
    from tdbnas.latency.units import space_units
    from tdbnas.spaces import get_space

    work = CACHE / f"{args.space}-{args.resolution}"
    if work.exists():
        (work / "lut.sqlite").unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(work / "lut.sqlite") + suffix).unlink(missing_ok=True)
        if not args.keep_cache:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    units = space_units(get_space(args.space), args.resolution)
    table = LatencyTable(work / "lut.sqlite")
    build_seconds: dict[str, float] = defaultdict(float)

    def timed_builder(batch, cache_dir):
        t0 = time.perf_counter()
        models = build_micromodels(batch, cache_dir, workers=args.workers)
        share = (time.perf_counter() - t0) / max(1, len(batch))
        for unit in batch:
            build_seconds[kind_of(unit.key)] += share
        return models

    started = time.perf_counter()
    with make_runner("local", threads=1) as runner:
        report = profile_units(units, table=table, profile="cpu", runner=runner, cache_dir=work / "mm",
                               device="cpu", builder=functools.partial(timed_builder))
        environment = runner.environment()
    wall = time.perf_counter() - started
    by_kind: dict[str, dict] = defaultdict(lambda: {"units": 0, "timing_s": 0.0, "latency_ms": 0.0})
    for entry in table.entries("cpu"):
        row = by_kind[kind_of(entry.key)]
        row["units"] += 1
        row["timing_s"] += sum(entry.samples) / 1000.0
        row["latency_ms"] += entry.value_ms
    for kind, row in by_kind.items():
        row["build_s"] = round(build_seconds[kind], 1)
    record = {"space": args.space, "resolution": args.resolution, "units": report.requested,
              "measured": report.measured, "wall_seconds": wall, "build_seconds": report.build_seconds,
              "measure_seconds": report.measure_seconds, "workers": args.workers, "kept_cache": args.keep_cache,
              "environment": environment, "by_kind": by_kind,
              "target": {"minutes": TARGET_MINUTES, "met": wall <= TARGET_MINUTES * 60}}
    rows = "\n".join(f"| {kind} | {row['units']} | {row['build_s']:.0f} | {row['timing_s']:.0f} | "
                     f"{row['latency_ms'] / row['units']:.3f} |" for kind, row in sorted(by_kind.items()))
    other = wall - report.build_seconds - report.measure_seconds
    met = "met" if record["target"]["met"] else "NOT met"
    markdown = (f"Space `{args.space}` at {args.resolution}x{args.resolution}: **{report.requested} distinct units** "
                f"profiled from an empty table in **{wall / 60:.1f} min** (target <= {TARGET_MINUTES:.0f} min: "
                f"{met}), runtime `{environment.get('runtime_version')}`.\n\n"
                f"Where the time goes: micro-model builds (Keras lowering + int8 conversion) "
                f"{report.build_seconds / 60:.1f} min ({args.workers} worker(s)"
                f"{', cache kept' if args.keep_cache else ''}), timing {report.measure_seconds / 60:.1f} min, "
                f"other (table, start-up) {other:.0f} s.\n\n"
                "| kind | units | build (s) | timed runs (s, sum of samples) | mean latency (ms) |\n"
                "|---|---|---|---|---|\n"
                f"{rows}\n")
    write_results(args.name, record, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
