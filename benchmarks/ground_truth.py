"""Ground truth for the built-in setting: `tdb-lite` detectors trained stand-alone, equal epochs.

Every accuracy signal of the search (supernet, zero-shot scores, short training, predictors) is
scored against this table (`benchmarks/signals.py`). What it holds:

* **architectures** stratified over the predicted CPU latency of the space: 24 uniformly random
  members, one per equal-probability bin between the 2nd and 98th percentile of the space's
  latency distribution (20,000 random members); 4 in the smallest region (the exact minimum
  of the space and 3 from a skip-heavy sampler, below the 2nd percentile); 4 in the largest
  region (the exact maximum and 3 above the 98th percentile); and MobileDet-EdgeTPU's layout
  projected onto the space (expansion 8 -> 4, fused 5x5 -> 3x3);
* each **trained from scratch** with the measured recipe (`_accuracy.RECIPE`) for the same
  number of epochs, val mAP@[.5:.95] on the 500 val images; 4 of them with 3 seeds each
  (the noise floor);
* per architecture: predicted and measured CPU latency (int8 TFLite, 1 thread, XNNPACK),
  MAdds, parameters, mAP per seed, training minutes.

Phases (each resumable; `all` runs them in order):

    python benchmarks/ground_truth.py throughput   # 1 x 2 threads vs 2 x 1 thread, images/s
    python benchmarks/ground_truth.py select       # the architectures (kept in the cache)
    python benchmarks/ground_truth.py train        # every (architecture, seed), 2 side by side
    python benchmarks/ground_truth.py latency      # measured CPU latency of every architecture
    python benchmarks/ground_truth.py report       # results/ground_truth.{json,md,png}

`report` works on a partial table (it says how many runs are done), so results can be
committed while training continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _accuracy as acc  # noqa: E402
from _common import RESULTS, write_atomic, write_results  # noqa: E402

OUT = acc.CACHE / "ground_truth"
PLAN = OUT / "plan.json"
# 6 epochs gave the projected MobileDet-EdgeTPU 0.190 mAP (below the 0.25 the issue asks of the
# best architectures; the e8 MobileDet-EdgeTPU reaches 0.289 at epoch 6 of its 15-minute run), so
# the table trains 10: about the epochs the default `tdbnas run` gives its final detector.
EPOCHS = 10.0
NOISE_SEEDS = (0, 1, 2)
# The noise floor's middle members: nearest these quantiles of the space's latency. 0.65, not
# 0.7: the member nearest 0.7 trains 2.5x slower per step than its neighbour (5x5 depthwise
# layers), and the noise floor needs 3 seeds of each.
NOISE_QUANTILES = (0.1, 0.4, 0.65)
MIDDLE_BINS, EXTREME = 24, 4
LOW_Q, HIGH_Q = 0.02, 0.98


# ---- selection -----------------------------------------------------------------------------------
def projected_reference() -> str:
    """MobileDet-EdgeTPU written with `tdb-lite`'s choices: the same op kind and kernel per layer,
    expansion 4 (the space's only one), fused 3x3 (no fused 5x5 in the space)."""
    from tdbnas.spaces import get_reference, resolve_arch

    text = get_reference("mobiledet-edgetpu").arch.encode().replace("_e8_", "_e4_").replace("er_k5", "er_k3")
    arch = resolve_arch(text)
    if not acc.space().contains(arch):
        raise RuntimeError(f"the projected MobileDet-EdgeTPU {text} is not in {acc.SPACE}")
    return arch.encode()


def biased_genomes(count: int, seed: int = 0):
    """Genomes from a sampler that reaches the ends of the latency range: per genome a skip
    probability ~ U(0, 1) and op preferences ~ Dirichlet(0.3) per slot (uniform sampling, a sum of
    22 independent choices, almost never leaves the middle)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    slots = acc.space().slots
    genomes = np.zeros((count, len(slots)), dtype=np.int64)
    for row in range(count):
        skip = rng.uniform()
        for column, slot in enumerate(slots):
            names = [str(c) for c in slot.choices]
            ops = [i for i, name in enumerate(names) if name != "skip"]
            if "skip" in names and rng.uniform() < skip:
                genomes[row, column] = names.index("skip")
            else:
                genomes[row, column] = ops[rng.choice(len(ops), p=rng.dirichlet([0.3] * len(ops)))]
    return genomes


def extreme_genome(predict, largest: bool):
    """The slowest (or fastest) member: with one width per block, a layer's latency depends on its
    own choice only, so the per-slot extreme of an additive predictor is the space's extreme."""
    import numpy as np

    slots = acc.space().slots
    genome = np.zeros(len(slots), dtype=np.int64)
    for column, slot in enumerate(slots):
        trials = np.repeat(genome[None], len(slot.choices), axis=0)
        trials[:, column] = np.arange(len(slot.choices))
        values = predict(trials)
        genome[column] = int(np.argmax(values) if largest else np.argmin(values))
    return genome


def select(args) -> list[dict]:
    import numpy as np

    from tdbnas.latency.space_predictor import SpacePredictor
    from tdbnas.search import min_latency
    from tdbnas.spaces import resolve_arch

    restore()
    if PLAN.is_file():
        return json.loads(PLAN.read_text())["archs"]
    space, predictor = acc.space(), acc.cpu_predictor()
    predict = SpacePredictor(predictor, space, acc.RESOLUTION, head=acc.head()).predict_genomes
    uniform_genomes = np.array([space.random_genome(i) for i in range(acc.DISTRIBUTION_SAMPLES)])
    uniform = predict(uniform_genomes)
    low, high = np.quantile(uniform, [LOW_Q, HIGH_Q])
    rows: list[dict] = []

    def add(stratum: str, genome) -> bool:
        arch = space.decode(tuple(int(g) for g in genome)).encode()
        if any(r["arch"] == arch for r in rows):
            return False
        rows.append({"arch": arch, "stratum": stratum})
        return True

    edges = np.quantile(uniform, np.linspace(LOW_Q, HIGH_Q, MIDDLE_BINS + 1))
    for lo, hi in zip(edges[:-1], edges[1:]):
        add("middle", uniform_genomes[int(np.flatnonzero((uniform >= lo) & (uniform < hi))[0])])
    biased = biased_genomes(20_000)
    biased_ms = predict(biased)
    smallest = np.array(space.encode(min_latency(space, predictor, acc.RESOLUTION, head=acc.head()).arch))
    largest = extreme_genome(predict, largest=True)
    for stratum, extreme, end in (("smallest", smallest, low), ("largest", largest, high)):
        add(stratum, extreme)
        start = float(predict(extreme[None])[0])
        inside = np.flatnonzero((biased_ms < low) if stratum == "smallest" else (biased_ms > high))
        for fraction in (0.25, 0.5, 0.75):
            target = start + fraction * (end - start)
            for index in inside[np.argsort(np.abs(biased_ms[inside] - target))]:
                if add(stratum, biased[index]):
                    break
    rows.append({"arch": projected_reference(), "stratum": "reference"})
    for row in rows:
        row["predicted_ms"] = float(predictor.predict(resolve_arch(row["arch"]), acc.RESOLUTION,
                                                      head=acc.head()).total_ms)
        row.update(acc.costs(row["arch"]))
    # The noise floor: the middle members nearest NOISE_QUANTILES, and the reference.
    middle = [r for r in rows if r["stratum"] == "middle"]
    noisy = {min(middle, key=lambda r: abs(r["predicted_ms"] - np.quantile(uniform, q)))["arch"]
             for q in NOISE_QUANTILES} | {rows[-1]["arch"]}
    for row in rows:
        row["seeds"] = list(NOISE_SEEDS) if row["arch"] in noisy else [0]
    plan = {"space": acc.SPACE, "resolution": acc.RESOLUTION, "epochs": EPOCHS,
            "distribution": {"samples": acc.DISTRIBUTION_SAMPLES,
                             "quantiles_ms": {str(q): float(np.quantile(uniform, q))
                                              for q in (0.0, LOW_Q, 0.25, 0.5, 0.75, HIGH_Q, 1.0)}},
            "archs": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    write_atomic(PLAN, json.dumps(plan, indent=1) + "\n")
    print(f"selected {len(rows)} architectures, {sum(len(r['seeds']) for r in rows)} trainings -> {PLAN}")
    return rows


def restore() -> None:
    """Rebuild a lost cache (a new machine, a new clone) from the committed results: the plan
    and every finished run, so `train` continues where the committed table stopped instead of
    selecting anew from a freshly (and differently) profiled latency table."""
    committed = RESULTS / "ground_truth.json"
    if PLAN.is_file() or not committed.is_file():
        return
    record = json.loads(committed.read_text())
    if "plan" not in record:
        return
    write_atomic(PLAN, json.dumps(record["plan"], indent=1) + "\n")
    runs = {(row["arch"], int(seed)): result for row in record["archs"] for seed, result in row["runs"].items()}
    restored = 0
    for job in jobs(record["plan"]["archs"]):
        result = runs.get((job.arch, job.seed))
        if result is not None and job.result() is None:
            write_atomic(job.result_path, json.dumps(result, indent=1) + "\n")
            restored += 1
    measured = {row["arch"]: row["measured_ms"] for row in record["archs"] if row.get("measured_ms")}
    if measured and not (OUT / "measured_latency.json").is_file():
        write_atomic(OUT / "measured_latency.json", json.dumps(measured, indent=1) + "\n")
    print(f"restored the plan, {restored} finished runs and {len(measured)} measured latencies from {committed}")


def jobs(rows: list[dict]) -> list[acc.TrainingJob]:
    """The reference first (so the epoch count is checked early), the budgets' middle next, the
    slow largest members last; an architecture's extra seeds right after its seed 0, so a partial
    table already carries a noise floor to read its rankings against."""
    first = sorted(rows, key=lambda r: {"reference": 0, "middle": 1, "smallest": 2}.get(r["stratum"], 3))
    ordered = [(r, s) for r in first for s in r["seeds"]]
    return [acc.TrainingJob(r["arch"], s, EPOCHS, OUT / "runs" / f"{acc.run_name(r['arch'])}-e{EPOCHS:g}-s{s}")
            for r, s in ordered]


def train(args) -> None:
    acc.dataset()
    acc.run_pool(jobs(select(args)), workers=args.workers, threads=args.threads)


# ---- measured latency --------------------------------------------------------------------------
def latency(args) -> None:
    from tdbnas.latency.profiles import make_runner, micromodel_cache
    from tdbnas.latency.profiling import measure_detectors
    from tdbnas.latency.table import LatencyTable
    from tdbnas.spaces import resolve_arch

    rows = select(args)
    with LatencyTable(acc.table_path()) as table, make_runner("local", threads=1) as runner:
        measured = measure_detectors([resolve_arch(r["arch"]) for r in rows], acc.RESOLUTION, table=table,
                                     profile="cpu", runner=runner, cache_dir=micromodel_cache(), head=acc.head(),
                                     device="cpu", progress=False)
    values = {m.arch.encode(): m.value_ms for m in measured}
    write_atomic(OUT / "measured_latency.json", json.dumps(values, indent=1) + "\n")
    print(f"measured {len(values)} detectors -> {OUT / 'measured_latency.json'}")


# ---- throughput: how to run two trainings on two cores --------------------------------------------
def throughput(args) -> dict:
    """Training images/s of one 2-thread run against two 1-thread runs side by side (the same
    arch, 40 steps each after 5 warm-up steps, medians of the step times)."""
    import subprocess

    code = ("import sys, json, time, statistics, torch\n"
            "sys.path.insert(0, sys.argv[3])\n"
            "import _accuracy as acc\n"
            "from tdbnas.detection.train import TrainConfig, Trainer\n"
            "threads = int(sys.argv[1]); torch.set_num_threads(threads)\n"
            "config = TrainConfig(arch=sys.argv[2], data=str(acc.dataset()), val_split='', threads=threads,\n"
            "                     progress=False, **acc.RECIPE)\n"
            "trainer = Trainer(config, sys.argv[4]); trainer.model.train(); batches = trainer._batches(0, 0)\n"
            "times = []\n"
            "for _ in range(45):\n"
            "    start = time.perf_counter(); images, targets = next(batches); trainer.train_step(images, targets)\n"
            "    times.append(time.perf_counter() - start)\n"
            "print(json.dumps({'threads': threads, 'step_s': times[5:]}))\n")
    arch = projected_reference()

    def launch(threads: int, index: int):
        return subprocess.Popen([sys.executable, "-c", code, str(threads), arch, str(Path(__file__).parent),
                                 str(OUT / "throughput" / f"run{index}")], stdout=subprocess.PIPE, text=True)

    def images_per_s(process) -> float:
        out, _ = process.communicate()
        steps = json.loads(out.strip().splitlines()[-1])["step_s"]
        return acc.RECIPE["batch_size"] / statistics.median(steps)

    one = images_per_s(launch(2, 0))
    pair = [launch(1, 1), launch(1, 2)]
    two = sum(images_per_s(p) for p in pair)
    record = {"arch": arch, "one_run_2_threads_img_s": one, "two_runs_1_thread_img_s": two, "ratio": two / one}
    write_atomic(OUT / "throughput.json", json.dumps(record, indent=1) + "\n")
    print(record)
    return record


# ---- report --------------------------------------------------------------------------------------
def report(args) -> dict:
    import numpy as np

    plan = json.loads(PLAN.read_text())
    rows = plan["archs"]
    measured_path = OUT / "measured_latency.json"
    measured = json.loads(measured_path.read_text()) if measured_path.is_file() else {}
    throughput_record = json.loads((OUT / "throughput.json").read_text()) if (OUT / "throughput.json").is_file() \
        else None
    done = total = 0
    train_seconds = 0.0
    table = []
    for row in rows:
        per_seed = {}
        minutes = []
        for job in jobs([row]):
            total += 1
            result = job.result()
            if result is None:
                continue
            done += 1
            train_seconds += result["train_seconds"]
            per_seed[str(job.seed)] = result  # whole, so `restore` can rebuild the cache from the commit
            minutes.append(result["train_seconds"] / 60)
        entry = {**row, "measured_ms": measured.get(row["arch"]), "runs": per_seed,
                 "train_minutes": [round(m, 2) for m in minutes]}
        values = [v["mAP"] for v in per_seed.values()]
        entry["mAP"] = per_seed["0"]["mAP"] if "0" in per_seed else None  # the ground truth: seed 0
        entry["mAP_mean"] = float(np.mean(values)) if values else None
        entry["mAP_seed_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        table.append(entry)
    noise = [e for e in table if e["mAP_seed_std"] is not None and len(e["runs"]) == len(NOISE_SEEDS)]
    pooled = float(np.sqrt(np.mean([e["mAP_seed_std"] ** 2 for e in noise]))) if noise else None
    # Every seed's distance from its architecture's mean: one bad run moves the pooled std a lot,
    # so the report shows the whole spread too.
    deviations = [v["mAP"] - e["mAP_mean"] for e in noise for v in e["runs"].values()]
    record = {"plan": plan, "space": acc.SPACE, "resolution": acc.RESOLUTION, "epochs": EPOCHS, "recipe": acc.RECIPE,
              "data": "built-in synthetic dataset (2,000 train / 500 val, 6 classes)",
              "distribution": plan["distribution"], "budgets_ms": acc.budgets(),
              "runs_done": done, "runs_total": total, "cpu_hours": train_seconds / 3600,
              "noise_floor": {"archs": len(noise), "seed_std_pooled": pooled,
                              "seed_std_per_arch": [e["mAP_seed_std"] for e in noise],
                              "seed_maps_per_arch": [[e["runs"][k]["mAP"] for k in sorted(e["runs"])] for e in noise],
                              "largest_deviation": float(max(np.abs(deviations))) if deviations else None},
              "throughput": throughput_record, "archs": table}
    plot = plot_landscape(table, record["budgets_ms"])
    markdown = render(record, plot)
    write_results("ground_truth", record, markdown)
    print(markdown)
    return record


def render(record: dict, plot: Path | None) -> str:
    noise = record["noise_floor"]
    t = record["throughput"]
    lines = [f"`{record['space']}` detectors at {record['resolution']}x{record['resolution']}, each trained "
             f"stand-alone from scratch for **{record['epochs']:g} epochs** with the measured recipe (C3/C4/C5 head, "
             "batch 16, SGD lr 0.6, half-epoch warm-up, cosine, zero-init residual, flips only) on the "
             f"{record['data']}; val mAP@[.5:.95] on all 500 val images. Runs done: **{record['runs_done']} of "
             f"{record['runs_total']}**; {record['cpu_hours']:.2f} hours of training (1 thread per run, two runs "
             "side by side on the 2 cores)."]
    if t:
        lines.append(f"\nTwo 1-thread runs side by side: {t['two_runs_1_thread_img_s']:.1f} images/s together, against "
                     f"{t['one_run_2_threads_img_s']:.1f} for one 2-thread run ({t['ratio']:.2f}x): the table was "
                     "trained two at a time.")
    if noise["seed_std_pooled"] is not None:
        per = "; ".join(f"{v:.4f} (" + ", ".join(f"{m:.3f}" for m in maps) + ")"
                        for v, maps in zip(noise["seed_std_per_arch"], noise["seed_maps_per_arch"]))
        lines.append(f"\n**Noise floor** (3 seeds on {noise['archs']} architectures): seed standard deviation of "
                     f"mAP {per}; pooled **{noise['seed_std_pooled']:.4f}**; the largest distance of one seed from "
                     f"its architecture's mean {noise['largest_deviation']:.4f}.")
    quantiles = record["distribution"]["quantiles_ms"]
    lines.append("\nPredicted CPU latency of the space (20,000 random members): " + ", ".join(
        f"q{float(q) * 100:g} {v:.2f} ms" for q, v in quantiles.items()) + ". Budgets of the signal benchmark: "
        + ", ".join(f"q{q * 100:g} = {v:.3f} ms" for q, v in record["budgets_ms"].items()) + ".")
    if plot:
        lines.append(f"\n![mAP vs measured latency]({plot.name})")
    lines += ["", "| # | stratum | predicted ms | measured ms | MAdds (M) | params (M) | mAP seed 0 | other seeds | "
              "train min | architecture |", "|---|---|---|---|---|---|---|---|---|---|"]
    order = sorted(record["archs"], key=lambda e: e["predicted_ms"])
    for index, e in enumerate(order):
        others = ", ".join(f"{v['mAP']:.4f}" for s, v in sorted(e["runs"].items()) if s != "0")
        measured = f"{e['measured_ms']:.3f}" if e["measured_ms"] else "-"
        value = f"{e['mAP']:.4f}" if e["mAP"] is not None else "-"
        minutes = f"{statistics.median(e['train_minutes']):.1f}" if e["train_minutes"] else "-"
        lines.append(f"| {index} | {e['stratum']} | {e['predicted_ms']:.3f} | {measured} | {e['madds'] / 1e6:.0f} | "
                     f"{e['params'] / 1e6:.2f} | {value} | {others} | {minutes} | `{e['arch']}` |")
    return "\n".join(lines)


def plot_landscape(table: list[dict], budgets: dict) -> Path | None:
    """mAP against measured (else predicted) latency, seeds as error bars, budgets as lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    points = [e for e in table if e["mAP"] is not None]
    if not points:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = {"middle": "tab:blue", "smallest": "tab:green", "largest": "tab:red", "reference": "black"}
    for stratum, colour in colours.items():
        chosen = [e for e in points if e["stratum"] == stratum]
        if not chosen:
            continue
        x = [e["measured_ms"] or e["predicted_ms"] for e in chosen]
        y = [e["mAP_mean"] for e in chosen]
        errors = [e["mAP_seed_std"] or 0.0 for e in chosen]
        axis.errorbar(x, y, yerr=errors, fmt="o", color=colour, label=stratum, capsize=3, markersize=5)
    for q, value in budgets.items():
        axis.axvline(value, color="grey", linestyle=":", linewidth=1)
        axis.text(value, axis.get_ylim()[0], f" q{q * 100:g}", color="grey", fontsize=8, va="bottom")
    axis.set_xlabel("CPU latency, int8 TFLite, 1 thread (ms; predicted where not measured)")
    axis.set_ylabel("val mAP@[.5:.95] (mean over seeds)")
    axis.set_title(f"{acc.SPACE} at {acc.RESOLUTION}x{acc.RESOLUTION}: stand-alone, {EPOCHS:g} epochs each")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    path = RESULTS / "ground_truth.png"
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", nargs="?", default="all",
                        choices=("all", "throughput", "select", "train", "latency", "report"))
    parser.add_argument("--workers", type=int, default=2, help="trainings side by side")
    parser.add_argument("--threads", type=int, default=1, help="threads per training")
    args = parser.parse_args()
    started = time.perf_counter()
    phases = ("throughput", "select", "train", "latency", "report") if args.phase == "all" else (args.phase,)
    for phase in phases:
        if phase == "throughput" and (OUT / "throughput.json").is_file() and args.phase == "all":
            continue
        {"throughput": throughput, "select": select, "train": train, "latency": latency, "report": report}[phase](args)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
