"""The stages of `tdbnas run`, each a function of the run and its settings.

    data -> latency -> supernet -> search -> retrain -> export -> measure -> report

A stage writes its artifacts in `<out>/<stage>/` and, when complete, `<out>/<stage>/stage.json`
(atomically). A rerun skips every stage that has its `stage.json`; the stage in flight when a
run was killed starts again, and the long ones (profiling, supernet training, search,
retraining) resume from their own checkpoints, so a kill loses at most the unit, step or
evaluation in flight.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdbnas.spaces.atomic import write_json_atomic

STAGES = ("data", "latency", "supernet", "search", "retrain", "export", "measure", "report")
#: Val images the report shows with the int8 model's detections.
REPORT_IMAGES = 4


@dataclass
class Run:
    config: dict[str, Any]
    out: Path
    log: Callable[[str], None] = print
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def directory(self, stage: str) -> Path:
        path = self.out / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, stage: str) -> dict[str, Any] | None:
        marker = self.out / stage / "stage.json"
        return json.loads(marker.read_text()) if marker.is_file() else None

    def finish(self, stage: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
        record = {"stage": stage, "seconds": round(seconds, 1), **summary}
        write_json_atomic(self.out / stage / "stage.json", record)
        return record

    # ---- shared lookups ---------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return int(self.config["resolution"])

    @property
    def data_root(self) -> str:
        return self.results["data"]["root"]

    def space(self):
        from tdbnas.spaces.pyramid_space import resolve_space

        return resolve_space(self.config["space"])

    @property
    def head_section(self) -> dict[str, Any]:
        """The `head` settings of every stage: the config's, or with `head: auto` the head the data
        stage fitted to the training boxes (recorded in its stage.json)."""
        return self.results["data"]["head"] if self.config["head"] == "auto" else self.config["head"]

    def head(self):
        """The head every stage builds, predicts and exports (one `head` section of the settings)."""
        from tdbnas.detection.train import TrainConfig, head_settings

        return head_settings(TrainConfig(head=self.head_section), self.results["data"]["num_classes"])


class StageFailed(RuntimeError):
    """A stage raised: says which, why, and that rerunning the same command continues there."""

    def __init__(self, run: Run, stage: str, cause: BaseException):
        finished = [s for s in STAGES if run.done(s) is not None]
        hint = ""
        if isinstance(cause, ImportError):
            package = getattr(cause, "name", None) or "the missing package"
            hint = f" (install {package}, e.g. pip install -e '.[export]')"
        kept = f"; finished stages are kept and reused ({', '.join(finished)})" if finished else ""
        super().__init__(f"stage {stage} failed: {type(cause).__name__}: {cause}{hint}. Fix the cause and rerun the "
                         f"same command to continue at stage {stage}{kept}")
        self.stage, self.cause = stage, cause


def run_stage(run: Run, stage: str) -> dict[str, Any]:
    previous = run.done(stage)
    if previous is not None:
        run.log(f"[{stage}] done before ({previous['seconds']:.0f} s): skipped")
        run.results[stage] = previous
        return previous
    run.log(f"[{stage}] ...")
    started = time.perf_counter()
    try:
        summary = STAGE_FUNCTIONS[stage](run)
    except Exception as exc:  # noqa: BLE001 - every failure gets the same way back
        raise StageFailed(run, stage, exc) from exc
    record = run.finish(stage, summary, time.perf_counter() - started)
    run.results[stage] = record
    run.log(f"[{stage}] skipped: {record['skipped']}" if "skipped" in record
            else f"[{stage}] finished in {record['seconds']:.0f} s")
    return record


# ---- 1. data -----------------------------------------------------------------------------------------
def stage_data(run: Run) -> dict[str, Any]:
    from tdbnas.detection.data import build_dataset
    from tdbnas.detection.data.carve import carve_validation, needs_validation_split
    from tdbnas.detection.data.synth import SynthConfig, write_synthetic_dataset

    settings = run.config["data"]
    root = settings["root"]
    if root is None:
        synth = SynthConfig(**settings["synth"])
        root = str(write_synthetic_dataset(run.out / "data" / "synth", synth))
    elif needs_validation_split(root, settings["train_split"], settings["val_split"]):
        root = str(carve_validation(root, run.out / "data" / "carved", train_split=settings["train_split"],
                                    val_split=settings["val_split"], seed=run.config["seed"]))
        run.log(f"[data] no {settings['val_split']!r} split: held out 10 % of the training images as one ({root})")
    train = build_dataset(root, settings["train_split"], size=run.resolution)
    val = build_dataset(root, settings["val_split"], size=run.resolution)
    summary = {"root": str(root), "num_classes": train.num_classes, "labels": train.class_names,
               "train_images": len(train), "val_images": len(val), "synthetic": settings["root"] is None}
    if run.config["head"] == "auto":
        summary.update(_fit_head(run, train))
    return summary


def _fit_head(run: Run, train) -> dict[str, Any]:
    """`head: auto`: the anchors of the default head fitted to the training boxes (`head_fit`)."""
    from tdbnas.detection.head_fit import input_boxes, propose_head
    from tdbnas.detection.train import TrainConfig, head_settings
    from tdbnas.pipeline.config import DEFAULTS

    base = head_settings(TrainConfig(head=DEFAULTS["head"]), train.num_classes)
    boxes, _ = input_boxes(train, run.resolution, run.config["retrain"].get("resize", "stretch"))
    proposal = propose_head(boxes, base, run.space().sample(run.config["seed"]), run.resolution)
    run.log(f"[data] head fitted to {proposal.boxes} boxes: {proposal.current_matched:.1%} -> {proposal.matched:.1%} "
            "of them have an anchor at IoU >= 0.5")
    return {"head": proposal.settings, "head_proposal": proposal.to_json()}


# ---- 2. latency ----------------------------------------------------------------------------------------
def _profile_name(run: Run) -> str:
    from tdbnas.latency import profiles

    device = run.config["device"]
    if run.config["latency"].get("cost_model"):
        from tdbnas.latency.learned_predictor import learned_name

        return learned_name(run.config["latency"]["cost_model"])
    if run.config["latency"].get("profile"):
        return run.config["latency"]["profile"]
    if device["name"] in profiles.modelled_devices() and not device["delegate"]:
        return device["name"]
    return profiles.default_profile_name(device["name"], device["threads"])


def _table(run: Run):
    from tdbnas.latency.profiles import open_table

    return open_table(run.config["device"]["table"])


def predictor(run: Run, table):
    from tdbnas.latency import profiles
    from tdbnas.spaces import resolve_arch

    if run.config["latency"].get("cost_model"):
        from tdbnas.latency.learned_predictor import CostModelPredictor

        learned = CostModelPredictor.load(run.config["latency"]["cost_model"], run.space())
        learned.check(run.resolution, run.head())
        return learned
    references = [resolve_arch(name) for name in run.config["references"]]
    return profiles.get_predictor(_profile_name(run), run.resolution, space=run.space(), archs=references,
                                  table=table, head=run.head(), threads=run.config["device"]["threads"])


def stage_latency(run: Run) -> dict[str, Any]:
    from tdbnas.latency import profiles
    from tdbnas.latency.predictor import calibrate
    from tdbnas.latency.profiling import measure_detectors
    from tdbnas.latency.space_predictor import SpacePredictor
    from tdbnas.search import Budget, Constraints
    from tdbnas.spaces import resolve_arch

    device, latency = run.config["device"], run.config["latency"]
    if device["runner"] != "local":
        raise ValueError(f"`tdbnas run` times models on this machine; for device.runner {device['runner']!r}, "
                         "profile first (`tdbnas profile --runner ...`) and set latency.profile to that profile")
    space, name = run.space(), _profile_name(run)
    with _table(run) as table:
        run.log(f"[latency] profile {name!r}: every unit of space {space.name} at {run.resolution} "
                "(measured on first use, then cached)")
        lut = predictor(run, table)
        spec = profiles.profile_spec(name)
        if lut.kind == "measured" and lut.calibration is None and latency["calibration_detectors"] > 0 \
                and (spec is None or spec.kind == "measured"):
            archs = [space.sample(run.config["seed"] + 10_000 + i) for i in range(latency["calibration_detectors"])]
            with profiles.make_runner("local", threads=device["threads"]) as runner:
                measured = measure_detectors(archs, run.resolution, table=table, profile=name, runner=runner,
                                             cache_dir=profiles.micromodel_cache(), head=run.head(), device="cpu")
            calibrate(table, name, [(m.arch, m.resolution, m.value_ms) for m in measured], head=run.head())
            lut = predictor(run, table)
        genomes = np.array([space.random_genome(run.config["seed"] + i) for i in range(2000)])
        by_genome = lut if lut.kind == "learned" else SpacePredictor(lut, space, run.resolution, head=run.head())
        predicted = by_genome.predict_genomes(genomes)
        budget = latency["budget_ms"]
        if budget == "auto":
            budget = float(np.quantile(predicted, latency["budget_quantile"]))
        constraints = Constraints([Budget(lut, float(budget))], resolution=run.resolution, head=run.head())
        minima = constraints.check_reachable(space)  # empty for a space with a pyramid (not enumerated)
        references = {ref: float(lut.predict(resolve_arch(ref), run.resolution, head=run.head()).total_ms)
                      for ref in run.config["references"]  # a cost model prices members of its space only
                      if lut.kind != "learned" or space.contains(resolve_arch(ref))}
    return {"profile": name, "kind": lut.kind, "runtime_version": lut.runtime_version, "budget_ms": float(budget),
            "budget_rule": latency["budget_ms"] if latency["budget_ms"] == "auto" else "given",
            "space_min_ms": float(minima[0].value) if minima else None, "space_latency_quantiles_ms": {
                q: float(np.quantile(predicted, q)) for q in (0.0, 0.1, 0.5, 0.9, 1.0)},
            "calibration": None if lut.calibration is None else [lut.calibration.a, lut.calibration.b],
            "references_ms": references}


# ---- 3. supernet ---------------------------------------------------------------------------------------
def supernet_needed(run: Run) -> bool:
    from tdbnas.search.signals import needs_supernet

    return needs_supernet(run.config["search"]["signal"]) or run.config["retrain"]["init"] == "supernet"


def stage_supernet(run: Run) -> dict[str, Any]:
    from tdbnas.search.supernet_train import SupernetTrainConfig, SupernetTrainer

    if not supernet_needed(run):
        return {"skipped": f"search.signal {run.config['search']['signal']!r} needs no supernet and retrain.init is "
                           f"{run.config['retrain']['init']!r}"}
    settings = {"space": run.config["space"], "data": run.data_root, "resolution": run.resolution,
                "seed": run.config["seed"], "head": run.head_section, **run.config["supernet"]}
    config = SupernetTrainConfig.from_dict(settings)
    summary = SupernetTrainer(config, run.directory("supernet")).run()
    return {"steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "checkpoint": str(run.out / "supernet" / "model.pt")}


# ---- 4. search -----------------------------------------------------------------------------------------
def signal_factory(run: Run):
    """The picklable factory of the run's accuracy signal (`tdbnas.search.signals`)."""
    from tdbnas.search.recalibration import RecalibrationSettings
    from tdbnas.search.signals import SignalFactory, head_items, needs_supernet

    settings = run.config["search"]
    signal = settings["signal"]
    options: tuple = ()
    if needs_supernet(signal):
        options = (("recalibration", RecalibrationSettings(images=int(settings["recalibration_images"]))),
                   ("max_eval_images", settings["eval_images"]))
    return SignalFactory(signal, (run.resolution, run.resolution), head_items(run.head()), data=run.data_root,
                         supernet=str(run.out / "supernet") if needs_supernet(signal) else None,
                         seed=run.config["seed"], options=options)


def stage_search(run: Run) -> dict[str, Any]:
    from tdbnas.search import Budget, Constraints, SearchSettings, run_search
    from tdbnas.search.parallel import make_evaluator
    from tdbnas.search.signals import measured_fidelity

    settings = dict(run.config["search"])
    signal = settings.pop("signal")
    for key in ("recalibration_images", "eval_images", "halving", "ray"):
        settings.pop(key)
    search_settings = SearchSettings.from_dict({"seed": run.config["seed"], "metric": "score", **settings})
    budget = run.results["latency"]["budget_ms"]
    factory = signal_factory(run)
    factory.check()
    ray = run.config["search"]["ray"]
    with _table(run) as table:
        constraints = Constraints([Budget(predictor(run, table), budget)], resolution=run.resolution,
                                  head=run.head())
        evaluator = make_evaluator(factory, ray=("local" if ray is True else ray) or None)
        try:
            result = run_search(run.space(), evaluator, constraints, search_settings, run.directory("search"),
                                log=lambda message: run.log(f"[search] {message}"), details={"signal": signal},
                                fitness_identity={"signal": signal})
        finally:
            evaluator.close()
    ranked = sorted(result.evaluations, key=lambda e: (-e.score, e.generation, e.position))
    summary: dict[str, Any] = {"signal": signal, "fidelity": measured_fidelity(signal),
                               "best_by_signal": ranked[0].arch, "score": ranked[0].score,
                               "evaluations": len(result.evaluations), "budget_ms": budget}
    best = ranked[0]
    halving = run.config["search"]["halving"]
    if halving:
        winner, rungs = _halving(run, [e.arch for e in ranked[: int(halving["candidates"])]], halving)
        best = next(e for e in ranked if e.arch == winner)
        summary["halving"] = rungs
    predicted = best.latency_ms[run.results["latency"]["profile"]]
    summary.update(best_arch=best.arch, predicted_ms=best.latency_ms, fitness=best.score,
                   budget_use=predicted / budget)
    return summary


def _halving(run: Run, candidates: list[str], settings: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Successive halving of the best candidates by short stand-alone training (the retrain
    recipe, truncated), scored on the search split."""
    from tdbnas.search.halving import TruncatedTraining, successive_halving

    recipe = {k: v for k, v in run.config["retrain"].items()
              if k not in ("init", "epochs", "max_minutes", "schedule_minutes")}
    training = TruncatedTraining(run.directory("search") / "halving", data=run.data_root, resolution=run.resolution,
                                 schedule_epochs=float(settings.get("schedule_epochs", 10.0)), seed=run.config["seed"],
                                 train_settings={**recipe, "head": run.head_section})
    rungs = successive_halving(candidates, training, settings["epochs"], eta=int(settings.get("eta", 2)))
    run.log(f"[search] successive halving over {len(candidates)} candidates: "
            + "; ".join(f"{r.budget:g} epochs: {len(r.scores)} trained" for r in rungs))
    return rungs[-1].ranked(candidates)[0], [{"epochs": r.budget, "scores": r.scores} for r in rungs]


# ---- 5. retrain ----------------------------------------------------------------------------------------
def stage_retrain(run: Run) -> dict[str, Any]:
    from tdbnas.detection.train import TrainConfig, Trainer
    from tdbnas.search.supernet_train import load_supernet, read_supernet_run

    arch = run.results["search"]["best_arch"]
    settings = dict(run.config["retrain"])
    init = settings.pop("init")
    config = TrainConfig.from_dict({"arch": arch, "data": run.data_root, "resolution": run.resolution,
                                    "val_split": run.config["data"]["val_split"], "seed": run.config["seed"],
                                    "head": run.head_section, **settings})
    model = None
    if init == "supernet" and not (run.out / "retrain" / "checkpoint.pt").exists():
        supernet = load_supernet(read_supernet_run(run.out / "supernet"), run.results["data"]["num_classes"])
        model = supernet.extract(arch)  # the child with its supernet weights: fine-tuned, not trained anew
        run.log("[retrain] starting from the supernet's weights of the searched architecture")
    summary = Trainer(config, run.directory("retrain"), model=model).run()
    metrics = summary.get("eval", {}).get("metrics", {})
    return {"arch": arch, "init": init, "steps": summary["steps"], "epochs": round(summary["epochs"], 2),
            "train_seconds": summary["train_seconds"], "weights": str(run.out / "retrain" / "model.pt"),
            "val_metrics": metrics}


# ---- 6. export -----------------------------------------------------------------------------------------
def stage_export(run: Run) -> dict[str, Any]:
    from tdbnas.export.detection_tflite import PostprocessOp
    from tdbnas.export.pipeline import ExportSettings, export_detector

    settings = run.config["export"]
    common = {"arch": run.results["search"]["best_arch"], "weights": run.results["retrain"]["weights"],
              "data": run.data_root, "resolution": run.resolution, "precision": settings["precision"],
              "input_type": settings["input_type"], "calibration_images": settings["calibration_images"],
              "verify_split": run.config["data"]["val_split"]}
    directory = run.directory("export")
    deploy = export_detector(ExportSettings(
        out=str(directory / "model.tflite"), verify=True, verify_images=settings["verify_images"],
        postprocess_op=PostprocessOp(max_detections=settings["max_detections"]), progress=False, **common))
    # The raw-output model is what the latency table predicts (no post-processing op).
    raw = export_detector(ExportSettings(out=str(directory / "model_raw.tflite"), postprocess=False,
                                         edgetpu_compile=False, progress=False, **common))
    return {"tflite": deploy["tflite"]["path"], "raw_tflite": raw["tflite"]["path"], "verify": deploy["verify"],
            "non_int8_outside_postprocess": deploy["non_int8_outside_postprocess"], "edgetpu": deploy["edgetpu"],
            "keras_vs_torch_max_abs": deploy["keras_vs_torch_max_abs"], "bytes": deploy["tflite"]["bytes"]}


# ---- 7. measure ----------------------------------------------------------------------------------------
def stage_measure(run: Run) -> dict[str, Any]:
    from tdbnas.latency.measure import MeasureProtocol, measure
    from tdbnas.latency.profiles import make_runner
    from tdbnas.spaces import resolve_arch

    export = run.results["export"]
    summary: dict[str, Any] = {}
    if run.results["latency"]["kind"] == "measured" and run.config["device"]["runner"] == "local":
        with make_runner("local", threads=run.config["device"]["threads"]) as runner:
            raw = measure(runner, Path(export["raw_tflite"]), MeasureProtocol())
            full = measure(runner, Path(export["tflite"]), MeasureProtocol())
        with _table(run) as table:
            predicted = predictor(run, table).predict(resolve_arch(run.results["search"]["best_arch"]),
                                                      run.resolution, head=run.head()).total_ms
        summary["latency"] = {"predicted_ms": predicted, "measured_ms": raw.value_ms,
                              "measured_with_postprocess_ms": full.value_ms, "statistic": raw.statistic,
                              "budget_ms": run.results["latency"]["budget_ms"],
                              "within_budget": raw.value_ms <= run.results["latency"]["budget_ms"],
                              "samples_ms": raw.samples_ms[:200]}
    else:
        summary["latency"] = {"skipped": f"profile {run.results['latency']['profile']!r} is "
                                         f"{run.results['latency']['kind']}: no device here to time the model on"}
    summary["plain_interpreter"] = plain_interpreter_check(run)
    return summary


def plain_interpreter_check(run: Run, images: int = 100) -> dict[str, Any]:
    """Run the exported .tflite in a subprocess that imports only the interpreter, numpy and PIL:
    the share of ground-truth objects it finds (same class, IoU >= 0.5, score >= 0.3)."""
    from tdbnas.detection.data import find_split

    files = find_split(run.data_root, run.config["data"]["val_split"])
    script = Path(__file__).with_name("plain_check.py")
    command = [sys.executable, str(script), "--model", run.results["export"]["tflite"], "--annotations",
               str(files.annotations), "--images", str(files.images), "--count", str(images),
               "--samples", str(REPORT_IMAGES)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the plain-interpreter check failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def stage_report(run: Run) -> dict[str, Any]:
    from tdbnas.pipeline.report import write_report

    paths = write_report(run)
    return {"markdown": str(paths[0]), "html": str(paths[1])}


STAGE_FUNCTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "data": stage_data, "latency": stage_latency, "supernet": stage_supernet, "search": stage_search,
    "retrain": stage_retrain, "export": stage_export, "measure": stage_measure, "report": stage_report,
}
