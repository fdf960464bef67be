"""Does a searched feature pyramid pay for itself on this CPU, and are its latencies predicted
as well as a backbone's?

Three parts (issue 8's acceptance), each cached under `benchmarks/.cache/pyramid/` so a rerun
resumes; the results file holds every part that has run.

* `latency`: the LUT predictor on detectors with a pyramid, end to end (int8, XNNPACK, 1
  thread, no post-processing op), the protocol of `latency_predictor.py`: `a*sum+b` fitted on
  `--fit` random members of the backbone + pyramid space, then `--random` other members and
  MobileDet-EdgeTPU with the named pyramids (fpn, fpn-lite, nasfpn-lite) validated with
  `tdbnas.latency.validation.validate`. The latency issue's bar: within +-10 % for >= 95 %.
* `search`: on the built-in synthetic dataset at `--resolution`, with one measured CPU profile
  (calibrated on backbone-only and pyramid detectors alike) and one budget for both: the median
  predicted latency of the backbone-only space (the rule of `tdbnas run`). A supernet per space
  (same schedule), then the same evolution (DetNAS-style, supernet mAP after BN recalibration on
  the search split) in each: backbone-only `tdb-lite` vs `tdb-lite` + searched pyramid.
* `compare`: stand-alone detectors trained from scratch with one schedule (equal steps) and scored
  on the val split: the backbone-only winner (SSDLite, no pyramid); the pyramid winner's backbone
  with no pyramid, with a plain top-down FPN of the same frame, and with its searched pyramid;
  each with predicted and measured CPU latency.

    python benchmarks/pyramid.py                                   # everything (~45 min on this 2-core CPU)
    python benchmarks/pyramid.py --parts latency --random 20       # the predictor only

Fitness numbers of the two searches come from two different supernets: they say how well each
search did by its own proxy, not which architecture is better; `compare` trains them for that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, write_atomic, write_results  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache" / "pyramid"
NAMED = ("fpn", "fpn-lite", "nasfpn-lite")
BACKBONE_SPACE = "tdb-lite"


def pyramid_search_space():
    """The searched space: tdb-lite with the default pyramid frame (P3-P7, 64 wide, separable
    convs, 2 intermediate + 5 output cells, stack 1, max-pool extra levels)."""
    from tdbnas.spaces import get_space, pyramid_space

    return pyramid_space(get_space(BACKBONE_SPACE))


def head_settings(args) -> dict:
    """The head of every detector here. Without a pyramid the predictors read C3, C4, C5 + 3
    extra layers (20, 10, 5, 3, 2, 1 at 160x160: the detection recipe's grid); with one they read
    its levels P3-P7 (20 ... 2), so neither side gets a finer grid than the other."""
    return {"from_features": ["C3", "C4", "C5"], "extra_depths": [512, 256, 256],
            "min_scale": args.min_scale, "max_scale": args.max_scale}


def head_spec(settings: dict):
    from tdbnas.spaces import SSDLiteHead

    tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return SSDLiteHead(num_classes=6, **tuples)  # the synthetic set has 6 classes


def recipe(args) -> dict:
    """The from-scratch recipe of benchmarks/detection_train.py (zero-initialised residual
    branches, batch 16, no random crop), for supernets and stand-alone detectors alike."""
    return {"head": head_settings(args), "zero_init_residual": True, "batch_size": 16, "lr": args.lr,
            "warmup_epochs": 0.5, "random_crop": False, "threads": args.threads, "workers": 0, "progress": False}


def _save(part: str, record: dict) -> None:
    write_atomic(CACHE / f"{part}.json", json.dumps({**record, "command": command_line()}, indent=2) + "\n")


def _load(part: str) -> dict | None:
    path = CACHE / f"{part}.json"
    return json.loads(path.read_text()) if path.is_file() else None


# ---- latency -------------------------------------------------------------------------------------
def part_latency(args) -> dict:
    from tdbnas.latency.predictor import calibrate
    from tdbnas.latency.profiles import make_runner
    from tdbnas.latency.profiling import measure_detectors, profile_units, runtime_version_of
    from tdbnas.latency.table import LatencyTable
    from tdbnas.latency.units import units_of_archs
    from tdbnas.latency.validation import error_summary, scatter_plot, validate
    from tdbnas.spaces import resolve_arch

    res = (args.latency_resolution,) * 2
    space = pyramid_search_space()
    table = LatencyTable(CACHE / f"lut-{args.latency_resolution}.sqlite")
    fit = [space.sample(10_000 + i) for i in range(args.fit)]
    archs = [space.sample(i) for i in range(args.random)] + [resolve_arch(f"mobiledet-edgetpu+{n}") for n in NAMED]
    cache = CACHE / "micromodels"
    started = time.perf_counter()
    with make_runner("local", threads=1) as runner:
        environment = runner.environment()
        version = runtime_version_of(environment)
        profile_units(units_of_archs(fit, res), table=table, profile="cpu", runner=runner, cache_dir=cache,
                      device="cpu", progress=False)
        fitted = measure_detectors(fit, res, table=table, profile="cpu", runner=runner, cache_dir=cache,
                                   device="cpu", progress=False)
        calibration = calibrate(table, "cpu", [(m.arch, m.resolution, m.value_ms) for m in fitted],
                                runtime_version=version)
        result = validate(archs, res, table=table, profile="cpu", runner=runner, cache_dir=cache, progress=False)
        first_pass = result.summary()
        result = _second_pass(result, archs, res, runner, cache)
    points = result.points
    plot = scatter_plot(points, Path(__file__).resolve().parent / "results" / f"{args.name}_latency.png",
                        title=f"pyramid detectors, {res[0]}x{res[1]}, 1 thread")
    record = {"resolution": list(res), "runtime_version": version, "space": space.name,
              "calibration": {"a": calibration.a, "b": calibration.b, "fitted_on": [a.encode() for a in fit]},
              "summary": result.summary(), "first_pass_summary": first_pass,
              "raw_sum_summary": error_summary([p.raw_sum_ms for p in points], [p.measured_ms for p in points]),
              "named": {n: p.__dict__ for n, p in zip(NAMED, points[args.random:])},
              "points": result.to_json()["points"], "plot": plot.name,
              "seconds": time.perf_counter() - started}
    _save("latency", record)
    return record


def _second_pass(result, archs, res, runner, cache):
    """Time every validated detector once more, in reverse order, and keep the faster of the two
    timings. The machine is shared: a competing job can slow a whole multi-second measurement
    (the protocol's minimum only removes short phases), and noise on a CPU only ever adds time.
    Both passes are reported."""
    import dataclasses

    from tdbnas.latency.measure import MeasureProtocol, measure
    from tdbnas.latency.profiling import detector_key, detector_model_path

    points = list(result.points)
    for index in reversed(range(len(archs))):
        path = detector_model_path(cache, detector_key(archs[index], res))
        again = measure(runner, path, MeasureProtocol()).value_ms
        if again < points[index].measured_ms:
            points[index] = dataclasses.replace(points[index], measured_ms=again)
    return dataclasses.replace(result, points=tuple(points))


# ---- search ----------------------------------------------------------------------------------------
def _data(args) -> Path:
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(num_train=args.train_images, num_val=args.val_images, image_size=args.resolution, seed=0)
    return Path(write_synthetic_dataset(CACHE / "data", config, progress=False))


def _cpu_predictor(args, table, spaces, head):
    """The measured CPU profile at the search resolution, covering both spaces, calibrated on
    three detectors of each."""
    from tdbnas.latency.predictor import LatencyPredictor, calibrate
    from tdbnas.latency.profiles import make_runner, units_for
    from tdbnas.latency.profiling import measure_detectors, profile_units, runtime_version_of

    res = (args.resolution,) * 2
    with make_runner("local", threads=1) as runner:
        version = runtime_version_of(runner.environment())
        units = set()
        for space in spaces:
            units |= units_for(res, space=space, head=head)
        profile_units(units, table=table, profile="cpu", runner=runner, cache_dir=CACHE / "micromodels", device="cpu",
                      progress=False)
        if table.profile("cpu").calibration is None:
            archs = [space.sample(20_000 + i) for space in spaces for i in range(3)]
            measured = measure_detectors(archs, res, table=table, profile="cpu", runner=runner, head=head,
                                         cache_dir=CACHE / "micromodels", device="cpu", progress=False)
            calibrate(table, "cpu", [(m.arch, m.resolution, m.value_ms) for m in measured], head=head,
                      runtime_version=version)
    return LatencyPredictor(table, "cpu", runtime_version=version)


def _trained(out: Path, train) -> dict:
    """The summary of a finished run in `out`, training it first (resuming) when needed."""
    path = out / "bench_summary.json"
    if path.is_file():
        return json.loads(path.read_text())
    summary = train()
    write_atomic(path, json.dumps(summary, indent=2))
    return summary


def _supernet(args, space, name, data) -> tuple[Path, dict]:
    import torch

    from tdbnas.search.supernet_train import SupernetTrainConfig, SupernetTrainer

    out = CACHE / "runs" / name
    torch.manual_seed(0)
    (CACHE / "spaces").mkdir(parents=True, exist_ok=True)
    description = CACHE / "spaces" / f"{name}.json"
    write_atomic(description, json.dumps(space.to_description()))
    config = SupernetTrainConfig(space=str(description), data=str(data), resolution=args.resolution, seed=0,
                                 epochs=args.supernet_epochs, search_fraction=0.1, max_minutes=args.supernet_minutes,
                                 schedule_minutes=args.supernet_minutes, **recipe(args))
    return out, _trained(out, lambda: SupernetTrainer(config, out, space=space).run())


def part_search(args) -> dict:
    from tdbnas.latency.table import LatencyTable
    from tdbnas.search import Budget, Constraints, SearchSettings, run_search
    from tdbnas.search.fitness import SupernetEvaluator
    from tdbnas.search.recalibration import RecalibrationSettings
    from tdbnas.spaces import get_space

    data = _data(args)
    head_dict = head_settings(args)
    head = head_spec(head_dict)
    spaces = {"backbone": get_space(BACKBONE_SPACE), "pyramid": pyramid_search_space()}
    res = (args.resolution,) * 2
    table = LatencyTable(CACHE / f"lut-{args.resolution}.sqlite")
    predictor = _cpu_predictor(args, table, list(spaces.values()), head)
    samples = {k: predictor.predict_many([s.sample(50_000 + i) for i in range(2000)], res, head=head)
               for k, s in spaces.items()}
    budget = float(np.median(samples["backbone"]))
    record: dict = {"resolution": list(res), "head": head_dict, "budget_ms": budget, "budget_rule":
                    "median predicted latency of 2000 random backbone-only members",
                    "calibration": {"a": predictor.calibration.a, "b": predictor.calibration.b},
                    "space_latency_quantiles_ms": {k: {q: float(np.quantile(v, q)) for q in (0.0, 0.1, 0.5, 0.9, 1.0)}
                                                   for k, v in samples.items()},
                    "share_within_budget": {k: float(np.mean(v <= budget)) for k, v in samples.items()},
                    "runs": {}}
    settings = SearchSettings(population=args.population, parents=args.parents, mutations=args.mutations,
                              crossovers=args.crossovers, generations=args.generations, seed=0)
    for key, space in spaces.items():
        started = time.perf_counter()
        checkpoint, trained = _supernet(args, space, f"supernet-{key}", data)
        supernet_seconds = time.perf_counter() - started
        evaluator = SupernetEvaluator(checkpoint, space=space, max_eval_images=args.eval_images,
                                      recalibration=RecalibrationSettings(images=args.recal_images, batch_size=32))
        constraints = Constraints([Budget(predictor, budget)], resolution=res, head=head)
        started = time.perf_counter()
        result = run_search(space, evaluator, constraints, settings, CACHE / "runs" / f"search-{key}", plot=False)
        scores = [e.score for e in result.evaluations]
        record["runs"][key] = {
            "space": space.name, "supernet": str(checkpoint), "supernet_train": trained,
            "supernet_seconds": supernet_seconds, "search_seconds": time.perf_counter() - started,
            "evaluations": len(result.evaluations), "best_arch": result.best.arch, "best_fitness": result.best.score,
            "best_fitness_all": result.best.fitness, "best_predicted_ms": result.best.latency_ms["cpu"],
            "median_fitness": statistics.median(scores), "generation_best": [
                max(e.score for e in result.evaluations if e.generation == g) for g in range(settings.generations)]}
        print(f"[search] {key}: best mAP {result.best.score:.4f} at {result.best.latency_ms['cpu']:.2f} ms "
              f"(budget {budget:.2f} ms)", flush=True)
    _save("search", record)
    return record


# ---- compare ---------------------------------------------------------------------------------------
def part_compare(args, search: dict) -> dict:
    from tdbnas.detection.train import TrainConfig, Trainer
    from tdbnas.latency.predictor import LatencyPredictor
    from tdbnas.latency.profiles import make_runner
    from tdbnas.latency.profiling import measure_detectors, profile_units, runtime_version_of
    from tdbnas.latency.table import LatencyTable
    from tdbnas.latency.units import units_of_archs
    from tdbnas.spaces import ArchSpec, PyramidSpec, resolve_pyramid

    data = _data(args)
    head_dict = head_settings(args)
    head = head_spec(head_dict)
    res = (args.resolution,) * 2
    backbone_winner = ArchSpec.parse(search["runs"]["backbone"]["best_arch"])
    pyramid_winner = ArchSpec.parse(search["runs"]["pyramid"]["best_arch"])
    frame = pyramid_winner.pyramid
    fpn = PyramidSpec(frame.min_level, frame.max_level, frame.width, resolve_pyramid("fpn").cells, frame.stack,
                      frame.extra, frame.separable)
    detectors = {"backbone-only winner (no pyramid)": backbone_winner,
                 "pyramid winner's backbone, no pyramid": pyramid_winner.backbone_only(),
                 "pyramid winner's backbone + plain FPN": pyramid_winner.with_pyramid(fpn),
                 "pyramid winner (searched pyramid)": pyramid_winner}
    table = LatencyTable(CACHE / f"lut-{args.resolution}.sqlite")
    with make_runner("local", threads=1) as runner:
        version = runtime_version_of(runner.environment())
        archs = list(detectors.values())
        profile_units(units_of_archs(archs, res, head=head), table=table, profile="cpu", runner=runner,
                      cache_dir=CACHE / "micromodels", device="cpu", progress=False)
        measured = measure_detectors(archs, res, table=table, profile="cpu", runner=runner, head=head,
                                     cache_dir=CACHE / "micromodels", device="cpu", progress=False)
    predictor = LatencyPredictor(table, "cpu", runtime_version=version)
    rows = {}
    for (label, arch), measurement in zip(detectors.items(), measured):
        out = CACHE / "runs" / f"train-{hashlib.sha1(arch.encode().encode()).hexdigest()[:12]}"
        config = TrainConfig(arch=arch.encode(), data=str(data), resolution=args.resolution, epochs=args.train_epochs,
                             seed=0, eval_images=None, max_minutes=args.train_max_minutes, **recipe(args))
        summary = _trained(out, lambda config=config, out=out: Trainer(config, out).run())
        metrics = summary.get("eval", {}).get("metrics", {})
        rows[label] = {"arch": arch.encode(), "val_mAP": metrics.get("mAP"), "val_mAP_50": metrics.get("mAP_50"),
                       "steps": summary.get("steps"), "train_seconds": summary.get("train_seconds"),
                       "predicted_ms": float(predictor.predict(arch, res, head=head).total_ms),
                       "measured_ms": measurement.value_ms}
        print(f"[compare] {label}: mAP {rows[label]['val_mAP']} measured {measurement.value_ms:.2f} ms", flush=True)
    record = {"resolution": list(res), "head": head_dict, "budget_ms": search["budget_ms"],
              "train": {"epochs": args.train_epochs, "max_minutes": args.train_max_minutes,
                        **{k: v for k, v in recipe(args).items() if k in ("batch_size", "lr")}}, "detectors": rows}
    _save("compare", record)
    return record


# ---- report ----------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def render(parts: dict) -> str:
    out = []
    latency = parts.get("latency")
    if latency:
        s, raw, cal = latency["summary"], latency["raw_sum_summary"], latency["calibration"]
        res = "x".join(str(v) for v in latency["resolution"])
        out += [f"## Latency predictions for detectors with a pyramid ({res}, int8, 1 thread)", "",
                f"`{latency['command']}`  ", f"Space `{latency['space']}`; runtime `{latency['runtime_version']}`; "
                f"`a*sum+b` fitted on {len(cal['fitted_on'])} other members: a = {cal['a']:.4f}, b = {cal['b']:.3f} "
                f"ms. {s['n']} detectors validated ({s['n'] - len(latency['named'])} random members + MobileDet-"
                f"EdgeTPU with {', '.join(latency['named'])}), {latency['seconds'] / 60:.1f} min.", "",
                "| | n | within +-10 % | within +-5 % | median abs. error | max abs. error | Spearman |",
                "|---|---|---|---|---|---|---|"]
        for label, summary in (("calibrated prediction", s), ("raw sum of units", raw)):
            out.append(f"| {label} | {summary['n']} | **{_pct(summary['within_10'])}** | {_pct(summary['within_5'])} | "
                       f"{_pct(summary['median_abs_error'])} | {_pct(summary['max_abs_error'])} | "
                       f"{summary.get('spearman', float('nan')):.3f} |")
        first = latency.get("first_pass_summary")
        if first:
            out += ["", f"Measured = the faster of two timings of each detector, taken in two passes over all of "
                    f"them (the machine is shared; noise only adds time). With the first pass alone: "
                    f"{_pct(first['within_10'])} within +-10 %, median abs. error {_pct(first['median_abs_error'])}, "
                    f"max {_pct(first['max_abs_error'])}."]
        out += ["", f"![scatter]({latency['plot']})", "",
                "| detector | sum of units (ms) | predicted (ms) | measured (ms) | error |", "|---|---|---|---|---|"]
        for p in latency["points"]:
            error = (p["predicted_ms"] - p["measured_ms"]) / p["measured_ms"]
            out.append(f"| `...{p['arch'][-70:]}` | {p['raw_sum_ms']:.2f} | {p['predicted_ms']:.2f} | "
                       f"{p['measured_ms']:.2f} | {100 * error:+.1f} % |")
        out.append("")
    search = parts.get("search")
    if search:
        res = "x".join(str(v) for v in search["resolution"])
        out += [f"## Search at an equal CPU budget ({res}, built-in synthetic dataset)", "",
                f"`{search['command']}`  ", f"Budget **{search['budget_ms']:.3f} ms** ({search['budget_rule']}); "
                f"calibration a = {search['calibration']['a']:.4f}, b = {search['calibration']['b']:.3f} ms; "
                f"head anchor scales {search['head']}. Share of random members within the budget: "
                + ", ".join(f"{k} {_pct(v)}" for k, v in search["share_within_budget"].items()) + ".", "",
                "| search | evaluations | best fitness (supernet mAP) | median fitness | best per generation | "
                "best predicted ms | supernet steps | search min |", "|---|---|---|---|---|---|---|---|"]
        for key, run in search["runs"].items():
            steps = run["supernet_train"].get("steps", "?")
            out.append(f"| {key} (`{run['space']}`) | {run['evaluations']} | **{run['best_fitness']:.4f}** | "
                       f"{run['median_fitness']:.4f} | {', '.join(f'{v:.3f}' for v in run['generation_best'])} | "
                       f"{run['best_predicted_ms']:.3f} | {steps} | {run['search_seconds'] / 60:.1f} |")
        out += ["", "Best architectures:", ""]
        out += [f"* {key}: `{run['best_arch']}`" for key, run in search["runs"].items()]
        out += ["", "The two fitness columns come from two supernets (one per space) trained with the same schedule; "
                "they rank candidates within a search and are not an accuracy comparison across searches "
                "(the next table is).", ""]
    compare = parts.get("compare")
    if compare:
        t = compare["train"]
        out += ["## Stand-alone detectors, same training schedule", "", f"`{compare['command']}`  ",
                f"From scratch, {t['epochs']} epochs (at most {t['max_minutes']} min), batch {t['batch_size']}, "
                f"lr {t['lr']}; COCO mAP on the whole val split. Budget {compare['budget_ms']:.3f} ms.", "",
                "| detector | val mAP | mAP@0.5 | steps | predicted ms | measured ms | within budget |",
                "|---|---|---|---|---|---|---|"]
        for label, row in compare["detectors"].items():
            fmt = (lambda v: "-" if v is None else f"{v:.4f}")
            out.append(f"| {label} | **{fmt(row['val_mAP'])}** | {fmt(row['val_mAP_50'])} | {row['steps']} | "
                       f"{row['predicted_ms']:.3f} | {row['measured_ms']:.3f} | "
                       f"{'yes' if row['predicted_ms'] <= compare['budget_ms'] else 'no'} |")
        out += ["", "Architectures:", ""]
        out += [f"* {label}: `{row['arch']}`" for label, row in compare["detectors"].items()]
    return "\n".join(out)


def main() -> int:
    global CACHE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="latency,search,compare")
    parser.add_argument("--name", default="pyramid")
    parser.add_argument("--latency-resolution", type=int, default=320)
    parser.add_argument("--random", type=int, default=20, help="random pyramid-space members validated")
    parser.add_argument("--fit", type=int, default=5, help="other members the calibration is fitted on")
    parser.add_argument("--resolution", type=int, default=160, help="search / training resolution")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--min-scale", type=float, default=0.2, help="anchor scale of the lowest map")
    parser.add_argument("--max-scale", type=float, default=0.95, help="anchor scale of the highest map")
    parser.add_argument("--lr", type=float, default=0.6, help="peak learning rate of every training run")
    parser.add_argument("--supernet-epochs", type=float, default=20.0)
    parser.add_argument("--supernet-minutes", type=float, default=6.0)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--parents", type=int, default=4)
    parser.add_argument("--mutations", type=int, default=4)
    parser.add_argument("--crossovers", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--recal-images", type=int, default=128)
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--train-epochs", type=float, default=4.0, help="equal epochs for every compared detector")
    parser.add_argument("--train-max-minutes", type=float, default=12.0, help="safety limit per detector")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=str(CACHE), help="where runs, tables and part results are kept")
    args = parser.parse_args()
    CACHE = Path(args.cache)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"latency", "search", "compare"})
    if unknown:
        parser.error(f"unknown part(s) {unknown}")

    import torch

    torch.set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    if "latency" in parts:
        part_latency(args)
    if "search" in parts:
        part_search(args)
    if "compare" in parts:
        search = _load("search")
        if search is None:
            parser.error("the compare part needs the search part's results; run --parts search first")
        part_compare(args, search)
    results = {name: _load(name) for name in ("latency", "search", "compare")}
    results = {k: v for k, v in results.items() if v is not None}
    markdown = render(results)
    write_results(args.name, {"parts": results}, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
