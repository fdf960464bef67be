"""Accuracy signals of the search, each scored against the stand-alone ground truth.

The ground truth is `benchmarks/ground_truth.py` (`tdb-lite` detectors trained stand-alone for
equal epochs on the built-in dataset). Every signal gives each of its architectures one value;
this script reports, against the mean stand-alone val mAP:

* Kendall tau and Spearman rho over all architectures;
* top-1 / top-3 regret under three CPU budgets (the 25th, 50th and 75th percentile of the
  space's predicted latency): the best ground-truth mAP among the feasible architectures minus
  the ground-truth mAP of the signal's best pick (top-3: of the best of its three best picks);
* the cost per candidate in seconds (on this shared 2-core machine).

Signals:

* baselines a signal must beat: parameters, MAdds, predicted latency, layers (non-skip);
* `zeroshot`: the training-free scores of `tdbnas.search.zeroshot` at initialisation;
* `supernet`: one-shot supernets (uniform SPOS sampling at 3 training lengths, FairNAS strict
  fairness and BigNAS sandwich with in-place distillation at the middle length's compute),
  fitness = mAP on the 200 search-split images with and without per-path BN recalibration;
* `short`: short stand-alone training (the first 1 and 2 epochs of the ground truth's schedule,
  on the training split minus the search split, another seed, mAP on the search split);
* `predictor`: a ridge accuracy predictor fitted on k <= 8 ground-truth points (MAdds, params,
  the zero-shot scores), scored only on the architectures it was not fitted on.

    python benchmarks/signals.py zeroshot
    python benchmarks/signals.py supernet            # trains and scores every supernet variant
    python benchmarks/signals.py supernet --variants spos-4
    python benchmarks/signals.py short
    python benchmarks/signals.py report              # results/signals.{json,md} + search/fidelity.json
    python benchmarks/signals.py search              # tdbnas search at the three budgets, default signal

`report` also writes the package's `search/fidelity.json`: each search signal's measured
agreement (what every search report quotes) and the default signal of `tdbnas search` and
`tdbnas run`, chosen by the rule in `choose_default`. `search` runs the `tdbnas search` command
at each budget with that default, trains its pick stand-alone (the ground truth's recipe and
epochs) when the table lacks it, and compares it with the table's median feasible architecture.

Every phase caches what it computed and resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ground_truth  # noqa: E402

import _accuracy as acc  # noqa: E402
from _common import write_atomic, write_results  # noqa: E402

OUT = acc.CACHE / "signals"
#: Supernet variants: (sampling, epochs of updates). A sandwich step trains 4 paths and a fair
#: step 6 (the most choices of a `tdb-lite` slot), so `fair-14` / `sandwich-14` cost what
#: `spos-14` costs (14 epochs of single-path steps).
VARIANTS = {"spos-4": ("uniform", 4.0), "spos-14": ("uniform", 14.0), "spos-38": ("uniform", 38.0),
            "fair-14": ("fair", 14.0 / 6), "sandwich-14": ("sandwich", 14.0 / 4)}
SHORT_EPOCHS = (1.0, 2.0)
#: How a supernet row names its scoring mode; `tdbnas search` scores with recalibration only.
RECALIBRATED, NOT_RECALIBRATED = "BN recal.", "no recal."
SHORT_SEED = 1
RECALIBRATION_IMAGES = 128
PREDICTOR_K = (4, 8)
PREDICTOR_REPEATS = 50


def plan() -> list[dict]:
    return json.loads(ground_truth.PLAN.read_text())["archs"]


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ---- the committed raw values rebuild a lost cache -----------------------------------------------
def raw_values() -> dict:
    """Every cached per-architecture value (committed in signals.json, so a new clone resumes)."""
    return {"zeroshot": load(OUT / "zeroshot.json"),
            "supernets": {v: load(supernet_dir(v) / "fitness.json") for v in VARIANTS
                          if (supernet_dir(v) / "fitness.json").is_file()},
            "short": {f"{job.seed}:{job.arch}": job.result() for job in short_jobs() if job.result()}}


def restore() -> None:
    committed = ground_truth.RESULTS / "signals.json"
    raw = json.loads(committed.read_text()).get("raw") if committed.is_file() else None
    if not raw:
        return
    targets = [(OUT / "zeroshot.json", raw["zeroshot"])]
    targets += [(supernet_dir(v) / "fitness.json", values) for v, values in raw["supernets"].items()]
    targets += [(job.result_path, raw["short"][f"{job.seed}:{job.arch}"]) for job in short_jobs()
                if f"{job.seed}:{job.arch}" in raw["short"]]
    restored = [path for path, values in targets if values and not path.is_file()]
    for path, values in targets:
        if path in restored:
            write_atomic(path, json.dumps(values, indent=1) + "\n")
    if restored:
        print(f"restored {len(restored)} cached files from {committed}")


# ---- zero-shot ------------------------------------------------------------------------------------
def run_zeroshot(args) -> None:
    import torch

    from tdbnas.search.zeroshot import ZeroShotScorer

    torch.set_num_threads(args.threads)
    path = OUT / "zeroshot.json"
    cache = load(path)
    scorer = ZeroShotScorer(resolution=acc.RESOLUTION, head=acc.head(), data=acc.dataset())
    changes = []
    for row in plan():
        if row["arch"] in cache and not args.retime:
            continue
        scores = scorer.score(row["arch"]) | ({"retimed_threads": args.threads} if args.retime else {})
        # A retime (run it on an otherwise idle machine) replaces the seconds, which the first pass
        # measured beside trainings; the scores are deterministic, so they must come out unchanged.
        old = cache.get(row["arch"], {})
        changes += [abs(scores[name] - old[name]) / max(abs(old[name]), 1e-12) for name in scores["seconds"]
                    if name in old]
        cache[row["arch"]] = scores
        write_atomic(path, json.dumps(cache, indent=1) + "\n")
    if changes:
        print(f"retimed: largest relative change of a score {max(changes):.2e} (deterministic scores: ~0)")
    print(f"zero-shot scores of {len(cache)} architectures -> {path}")


# ---- supernets -----------------------------------------------------------------------------------
def supernet_dir(variant: str) -> Path:
    return OUT / "supernets" / variant


def train_supernet(variant: str, threads: int) -> Path:
    from tdbnas.search.supernet_train import SupernetTrainConfig, SupernetTrainer

    sampling, epochs = VARIANTS[variant]
    out = supernet_dir(variant)
    if not (out / "model.pt").exists():
        recipe = {k: v for k, v in acc.RECIPE.items()}
        config = SupernetTrainConfig(space=acc.SPACE, data=str(acc.dataset()), epochs=epochs, sampling=sampling,
                                     threads=threads, progress=False, checkpoint_minutes=3.0, **recipe)
        SupernetTrainer(config, out).run()
    return out


def run_supernet(args) -> None:
    import torch

    from tdbnas.search.fitness import SupernetEvaluator
    from tdbnas.search.recalibration import RecalibrationSettings

    torch.set_num_threads(args.threads)
    for variant in args.variants or list(VARIANTS):
        path = supernet_dir(variant) / "fitness.json"
        cache = load(path)
        wanted = [f"{mode}:{row['arch']}" for row in plan() for mode in ("recal", "plain")]
        if "_training" in cache and all(key in cache for key in wanted):
            continue  # scored before (possibly restored from the committed results): nothing to train
        checkpoint = train_supernet(variant, args.threads)
        evaluator = SupernetEvaluator(checkpoint, recalibration=RecalibrationSettings(images=RECALIBRATION_IMAGES))
        for row in plan():
            for recalibrate in (True, False):
                key = f"{'recal' if recalibrate else 'plain'}:{row['arch']}"
                if key not in cache:
                    result = evaluator.evaluate(row["arch"], recalibrate=recalibrate)
                    cache[key] = {"mAP": result["mAP"], "seconds": result["seconds"]}
                    write_atomic(path, json.dumps(cache, indent=1) + "\n")
        history = [json.loads(line) for line in (checkpoint / "history.jsonl").read_text().splitlines()]
        steps = [h for h in history if h.get("event") == "train"]
        cache["_training"] = {"train_seconds": steps[-1]["train_seconds"] if steps else None,
                              "steps": steps[-1]["step"] if steps else None, "sampling": VARIANTS[variant][0],
                              "epochs": VARIANTS[variant][1]}
        write_atomic(path, json.dumps(cache, indent=1) + "\n")
        print(f"supernet {variant}: {len(cache) - 1} scores -> {path}")


# ---- short training ------------------------------------------------------------------------------
def short_jobs() -> list[acc.TrainingJob]:
    return [acc.TrainingJob(r["arch"], SHORT_SEED, ground_truth.EPOCHS,
                            OUT / "short" / f"{acc.run_name(r['arch'])}-e{ground_truth.EPOCHS:g}-s{SHORT_SEED}",
                            stop_epochs=max(SHORT_EPOCHS), eval_at=SHORT_EPOCHS, train_split="train-minus-search",
                            val_split="search") for r in plan()]


def run_short(args) -> None:
    acc.run_pool(short_jobs(), workers=args.workers, threads=args.threads)


# ---- scoring ---------------------------------------------------------------------------------------
def signal_table(rows: list[dict]) -> dict[str, dict]:
    """signal name -> {"values": {arch: value}, "seconds": per candidate, "kind": ...}."""
    signals: dict[str, dict] = {}

    def add(name: str, kind: str, values: dict, seconds: float | None, note: str = "") -> None:
        if values:
            signals[name] = {"kind": kind, "values": values, "seconds": seconds, "note": note}

    add("params", "baseline", {r["arch"]: r["params"] for r in rows}, 0.0)
    add("madds", "baseline", {r["arch"]: r["madds"] for r in rows}, 0.0)
    add("predicted latency", "baseline", {r["arch"]: r["predicted_ms"] for r in rows}, 0.0, "bigger is better")
    add("layers", "baseline", {r["arch"]: float(sum(layer != "skip" for block in r["arch"].split("/")
                                                    for layer in block.split(","))) for r in rows}, 0.0,
        "non-skip layers")
    zeroshot = load(OUT / "zeroshot.json")
    from tdbnas.search.zeroshot import ZERO_SHOT

    for name in ZERO_SHOT:
        values = {a: z[name] for a, z in zeroshot.items() if a in {r["arch"] for r in rows}}
        seconds = [z["seconds"][name] for z in zeroshot.values()]
        threads = {z.get("retimed_threads") for z in zeroshot.values()}
        timing = f"retimed on an idle machine, {min(threads)} thread(s)" if threads and None not in threads else ""
        add(f"zero-shot {name}", "zero-shot", values, statistics.median(seconds) if seconds else None, timing)
    for variant in VARIANTS:
        cache = load(supernet_dir(variant) / "fitness.json")
        training = cache.get("_training", {})
        for mode in ("recal", "plain"):
            values = {k.split(":", 1)[1]: v["mAP"] for k, v in cache.items() if k.startswith(mode + ":")}
            seconds = [v["seconds"] for k, v in cache.items() if k.startswith(mode + ":")]
            note = (f"{training.get('sampling')} sampling, {training.get('epochs', 0):.3g} epochs of updates, "
                    f"{(training.get('train_seconds') or 0) / 60:.0f} min of training on the shared machine")
            add(f"supernet {variant} {RECALIBRATED if mode == 'recal' else NOT_RECALIBRATED}", "supernet", values,
                statistics.median(seconds) if seconds else None, note)
    for epochs in SHORT_EPOCHS:
        values, seconds = {}, []
        for job in short_jobs():
            result = job.result()
            if result is None:
                continue
            point = next(e for e in result["evaluations"] if abs(e["epochs"] - epochs) < 0.05)
            values[job.arch] = point["mAP"]
            seconds.append(point["train_seconds"])
        add(f"short training {epochs:g} epoch{'s' if epochs > 1 else ''}", "short training", values,
            statistics.median(seconds) if seconds else None, "1 thread, on the shared machine")
    return signals


def score(values: dict[str, float], rows: list[dict], budgets: dict[float, float]) -> dict:
    """Rank correlation and regrets of one signal (on the architectures it has values for)."""
    from tdbnas.search.zeroshot import rank_correlations

    known = [r for r in rows if r["arch"] in values and r["truth"] is not None
             and math.isfinite(values[r["arch"]])]
    result = {"n": len(known)}
    if len(known) < 4:
        return result
    result.update(rank_correlations([values[r["arch"]] for r in known], [r["truth"] for r in known]))
    for q, budget in budgets.items():
        feasible = [r for r in known if r["predicted_ms"] <= budget]
        if not feasible:
            continue
        best = max(r["truth"] for r in feasible)
        ranked = sorted(feasible, key=lambda r: -values[r["arch"]])
        result[f"regret1_q{q:g}"] = best - ranked[0]["truth"]
        result[f"regret3_q{q:g}"] = best - max(r["truth"] for r in ranked[:3])
        result[f"feasible_q{q:g}"] = len(feasible)
    return result


def predictor_features(rows: list[dict], signals: dict) -> dict[str, tuple[list[dict], np.ndarray]]:
    """Feature sets of the learned predictor -> (the rows that have them, features)."""
    from tdbnas.spaces import resolve_arch

    def cost_columns(r):
        return [math.log(r["madds"]), math.log(r["params"])]

    sets = {}
    zero_shot = [name for name in signals if name.startswith("zero-shot")]
    known = [r for r in rows if r["truth"] is not None and all(r["arch"] in signals[f]["values"] for f in zero_shot)]
    sets["costs + zero-shot"] = (known, np.array([cost_columns(r) + [signals[f]["values"][r["arch"]]
                                                                     for f in zero_shot] for r in known]))
    space = acc.space()
    known = [r for r in rows if r["truth"] is not None]
    genomes = np.array([space.encode(resolve_arch(r["arch"])) for r in known])
    one_hot = np.concatenate([genomes[:, [j]] == np.arange(len(slot))[None] for j, slot in enumerate(space.slots)
                              if len(slot) > 1], axis=1).astype(float)
    sets["genome one-hot + costs"] = (known, np.c_[one_hot, [cost_columns(r) for r in known]])
    return sets


def ridge_loo(x: np.ndarray, y: np.ndarray, train, test) -> np.ndarray:
    """Ridge on standardised features with lambda chosen by leave-one-out inside `train`;
    predictions for `test` (never fitted on them)."""
    k = len(train)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-9
    a = np.c_[(x[train] - mean) / std, np.ones(k)]
    target = y[train]

    def solve(rows, lam):
        penalty = lam * np.eye(a.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        return np.linalg.lstsq(a[rows].T @ a[rows] + penalty, a[rows].T @ target[rows], rcond=None)[0]

    def loo_error(lam):
        return np.mean([(a[i] @ solve(np.arange(k) != i, lam) - target[i]) ** 2 for i in range(k)])

    lam = min((0.1, 1.0, 10.0, 100.0), key=loo_error)
    return np.c_[(x[test] - mean) / std, np.ones(len(test))] @ solve(np.ones(k, bool), lam)


def predictor_scores(rows: list[dict], signals: dict, budgets: dict[float, float]) -> dict[str, dict]:
    """A ridge accuracy predictor per feature set, fitted on k random ground-truth points and
    scored on the rest (regrets over the held-out feasible members only); medians over draws."""
    out = {}
    for name, (known, x) in predictor_features(rows, signals).items():
        if len(known) < max(PREDICTOR_K) + 4:
            continue
        y = np.array([r["truth"] for r in known])
        for k in PREDICTOR_K:
            rng = np.random.default_rng(k)
            draws = []
            for _ in range(PREDICTOR_REPEATS):
                train = rng.choice(len(known), size=k, replace=False)
                test = np.setdiff1d(np.arange(len(known)), train)
                predicted = ridge_loo(x, y, train, test)
                held_out = [known[i] for i in test]
                draws.append(score({r["arch"]: float(p) for r, p in zip(held_out, predicted)}, held_out, budgets))
            keys = [key for key in draws[0] if key != "n"]
            out[f"predictor k={k} ({name})"] = {
                "kind": "predictor", "seconds": 0.0, "n": len(known) - k,
                "note": f"ridge on {name}, lambda by leave-one-out; median of {PREDICTOR_REPEATS} draws of {k} "
                        f"training points, scored on the other {len(known) - k}",
                **{key: float(np.median([d[key] for d in draws if key in d])) for key in keys}}
    return out


def tau_ceiling(rows: list[dict], noise: float | None, draws: int = 2000) -> dict | None:
    """The Kendall tau a perfect signal (each architecture's expected mAP) would reach against this
    table, given the seed noise floor: how far any signal's tau can be read.

    Each table value is the mean of its seeds, so it carries noise / sqrt(seeds); the spread of the
    expected mAPs is what the table's variance leaves after that noise. Simulated with normal
    draws of both (the table's own size and seed counts)."""
    from scipy.stats import kendalltau

    known = [r for r in rows if r["truth"] is not None]
    if noise is None or len(known) < 4:
        return None
    seeds = np.array([max(1, len(r.get("runs") or {})) for r in known])
    noise_var = noise ** 2 / seeds
    true_var = float(np.var([r["truth"] for r in known], ddof=1) - noise_var.mean())
    if true_var <= 0:
        return {"kendall_median": 0.0, "true_spread": 0.0, "note": "the table's spread is all seed noise"}
    rng = np.random.default_rng(0)
    taus = []
    for _ in range(draws):
        expected = rng.normal(0.0, math.sqrt(true_var), len(known))
        taus.append(kendalltau(expected, expected + rng.normal(0.0, np.sqrt(noise_var))).statistic)
    return {"kendall_median": float(np.median(taus)), "kendall_q10": float(np.quantile(taus, 0.1)),
            "kendall_q90": float(np.quantile(taus, 0.9)), "true_spread": math.sqrt(true_var)}


def run_report(args) -> dict:
    truth_record = json.loads((ground_truth.RESULTS / "ground_truth.json").read_text())
    rows = [{**r, "truth": r["mAP_mean"]} for r in truth_record["archs"]]
    budgets = {float(q): v for q, v in truth_record["budgets_ms"].items()}
    noise = truth_record["noise_floor"]["seed_std_pooled"]
    # One bad run dominates the pooled std; the median architecture's std is the typical seed.
    per_arch = truth_record["noise_floor"]["seed_std_per_arch"]
    typical_noise = float(np.median(per_arch)) if per_arch else None
    signals = signal_table(rows)
    scored = {name: {"kind": s["kind"], "seconds": s["seconds"], "note": s["note"], **score(s["values"], rows, budgets)}
              for name, s in signals.items()}
    # Inside a budget the candidates differ less in size than across the whole range, where "bigger
    # is better" ranks the extremes for free: tau over the middle stratum alone (uniform samples of
    # the space's central latency range) is the harder test.
    middle = [r for r in rows if r["stratum"] == "middle"]
    for name, s in signals.items():
        scored[name]["kendall_middle"] = score(s["values"], middle, {}).get("kendall")
    scored.update(predictor_scores(rows, signals, budgets))
    baseline_tau = max((s.get("kendall", -1) for s in scored.values() if s["kind"] == "baseline"
                        and s.get("kendall") is not None), default=None)
    for s in scored.values():
        s["beats_madds_params_by"] = (s["kendall"] - max(scored["madds"]["kendall"], scored["params"]["kendall"])
                                      if "kendall" in s else None)
        s["regret1_within_2_noise"] = (all(s.get(f"regret1_q{q:g}", math.inf) <= 2 * noise for q in budgets)
                                       if noise else None)
    record = {"ground_truth": {"runs_done": truth_record["runs_done"], "archs": len(rows), "noise_floor": noise,
                               "epochs": truth_record["epochs"], "tau_ceiling": tau_ceiling(rows, noise),
                               "tau_ceiling_typical_seed": tau_ceiling(rows, typical_noise)},
              "budgets_ms": budgets, "signals": scored,
              "best_baseline_kendall": baseline_tau}
    partial = None
    if truth_record["runs_done"] < truth_record["runs_total"]:
        # Searches quote the partial numbers as partial; the default signal changes only on a
        # complete table.
        partial = f"{truth_record['runs_done']} of {truth_record['runs_total']} planned trainings"
        print(f"ground truth incomplete ({partial}): {FIDELITY} says so, and keeps its default signal")
    record["shipped"] = write_fidelity(record, partial)
    record["raw"] = raw_values()
    markdown = render(record)
    write_results("signals", record, markdown)
    print(markdown)
    return record


def render(record: dict) -> str:
    budgets = record["budgets_ms"]
    truth = record["ground_truth"]
    noise = truth["noise_floor"]
    lines = [f"Signals against the stand-alone ground truth (`ground_truth.md`: {truth['archs']} `tdb-lite` "
             f"architectures, {truth['epochs']:g} epochs each, {truth['runs_done']} trainings; seed noise floor "
             + (f"{noise:.4f} mAP" if noise else "not yet measured") + "). Regret in mAP points under the CPU budgets "
             + ", ".join(f"q{q * 100:g} = {v:.2f} ms" for q, v in budgets.items()) + "; cost in seconds per candidate "
             "on this shared 2-core machine.", ""]
    for key, which in (("tau_ceiling", "the pooled seed std"),
                       ("tau_ceiling_typical_seed", "the median architecture's seed std")):
        ceiling = truth.get(key)
        if ceiling and "kendall_q10" in ceiling:
            lines += [f"**How far a tau can be read, with {which}:** a perfect signal (each architecture's expected "
                      f"mAP) would reach Kendall tau {ceiling['kendall_median']:.2f} (10-90 %: "
                      f"{ceiling['kendall_q10']:.2f}-{ceiling['kendall_q90']:.2f}) against this table: its spread of "
                      f"expected mAPs ({ceiling['true_spread']:.4f}) against that noise, simulated at the table's "
                      "size.",
                      ""]
        elif ceiling:
            lines += [f"**How far a tau can be read, with {which}:** not at all: {ceiling['note']}.", ""]
    lines += [acceptance(record), "", default_line(record.get("shipped", {})), ""]
    lines += ["| signal | kind | n | Kendall tau | Spearman | tau - max(MAdds, params) | tau, middle stratum | "
              + " | ".join(f"regret@1 q{q * 100:g} | @3" for q in budgets)
              + " | regret@1 <= 2x noise | s / candidate | note |",
              "|---|---|---|---|---|---|---|" + "---|---|" * len(budgets) + "---|---|---|"]

    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for name, s in sorted(record["signals"].items(), key=lambda item: -(item[1].get("kendall") or -9)):
        regrets = " | ".join(f"{cell(s.get(f'regret1_q{q:g}'), 4)} | {cell(s.get(f'regret3_q{q:g}'), 4)}"
                             for q in budgets)
        within = {True: "yes", False: "no", None: "-"}[s.get("regret1_within_2_noise")]
        lines.append(f"| {name} | {s['kind']} | {s.get('n', 0)} | {cell(s.get('kendall'))} | "
                     f"{cell(s.get('spearman'))} | {cell(s.get('beats_madds_params_by'))} | "
                     f"{cell(s.get('kendall_middle'))} | {regrets} | {within} | "
                     f"{cell(s['seconds'], 2)} | {s.get('note', '')} |")
    return "\n".join(lines)


def default_line(shipped: dict) -> str:
    """What `tdbnas search` and `tdbnas run` rank by, from `search/fidelity.json`, and what waits."""
    if "default" not in shipped:
        return "**Default signal:** not chosen (no complete ground truth)."
    line = (f"**Default signal of `tdbnas search` / `tdbnas run`:** `{shipped['default']}`"
            + (f" (its search check: `signals_search_{shipped['default']}.md`)"
               if search_check_passed(shipped["default"]) else "")
            + f"; without `--data`: `{shipped['default_without_data']}`.")
    for key in ("default_pending", "default_without_data_pending"):
        if key in shipped:
            line += f" `{shipped[key]['signal']}` measures better and waits for `{shipped[key]['waits_for']}`."
    return line


#: The issue's bar for a signal: Kendall tau, its lead over the MAdds and params baselines.
ACCEPT_TAU, ACCEPT_LEAD = 0.6, 0.1


def acceptance(record: dict) -> str:
    """One paragraph: which signals (not baselines) meet the bar, or the closest one and what it misses."""
    noise = record["ground_truth"]["noise_floor"]
    candidates = {name: s for name, s in record["signals"].items()
                  if s["kind"] != "baseline" and s.get("kendall") is not None}
    if not candidates or noise is None:
        return "**Acceptance:** not judged yet (no scored signal or no measured noise floor)."

    def misses(s: dict) -> list[str]:
        out = []
        if s["kendall"] < ACCEPT_TAU:
            out.append(f"tau {s['kendall']:.2f} < {ACCEPT_TAU}")
        if s["beats_madds_params_by"] < ACCEPT_LEAD:
            out.append(f"leads MAdds/params by {s['beats_madds_params_by']:+.2f} < {ACCEPT_LEAD}")
        if not s["regret1_within_2_noise"]:
            out.append(f"a top-1 regret above 2x the noise floor ({2 * noise:.3f})")
        return out

    bar = (f"Kendall tau >= {ACCEPT_TAU}, >= {ACCEPT_LEAD} above both MAdds and params, top-1 regret <= 2x the "
           f"pooled seed noise ({2 * noise:.3f}) at every budget")
    passing = [name for name, s in candidates.items() if not misses(s)]
    if passing:
        return f"**Acceptance ({bar}): met by {', '.join(passing)}.**"
    best = max(candidates, key=lambda name: candidates[name]["kendall"])
    return (f"**Acceptance ({bar}): no signal meets it.** The closest, {best}, misses: "
            f"{'; '.join(misses(candidates[best]))}.")


# ---- what the search ships -------------------------------------------------------------------------
FIDELITY = acc.BENCHMARKS.parent / "search" / "fidelity.json"
#: The default run's search: its evaluations (population x generations of pipeline/config.py) and
#: the minutes its search stage may take, which bound a default signal's cost per candidate.
DEFAULT_RUN_EVALUATIONS = 16 * 8
DEFAULT_RUN_SEARCH_MINUTES = 3.0


def search_signal_rows(scored: dict) -> dict[str, str]:
    """search signal name (`tdbnas.search.signals.SIGNALS`) -> the benchmark row measuring it; the
    supernet's is its best-ranking variant with BN recalibration, which `tdbnas search` always does
    (the supernet a user trains decides which variant applies)."""
    from tdbnas.search.signals import ZERO_SHOT

    rows = {"madds": "madds", "params": "params", **{name: f"zero-shot {name}" for name in ZERO_SHOT}}
    supernets = [name for name, s in scored.items() if s["kind"] == "supernet" and s.get("kendall") is not None
                 and name.endswith(RECALIBRATED)]
    if supernets:
        rows["supernet"] = max(supernets, key=lambda name: scored[name]["kendall"])
    return {signal: row for signal, row in rows.items() if scored.get(row, {}).get("kendall") is not None}


def choose_default(scored: dict, rows: dict[str, str], data_free: bool = False) -> str:
    """The highest Kendall tau among the signals a default run can afford (cost per candidate x
    its evaluations within its search minutes, and nothing to train first); ties: the cheaper.
    `data_free`: among those that score no real images (`tdbnas search` without --data)."""
    from tdbnas.search.signals import NEEDS_DATA

    budget = DEFAULT_RUN_SEARCH_MINUTES * 60 / DEFAULT_RUN_EVALUATIONS
    affordable = [signal for signal, row in rows.items() if signal != "supernet"
                  and (scored[row]["seconds"] or 0.0) <= budget and not (data_free and signal in NEEDS_DATA)]
    return max(affordable, key=lambda signal: (round(scored[rows[signal]]["kendall"], 3),
                                               -(scored[rows[signal]]["seconds"] or 0.0)))


def search_check_passed(signal: str) -> bool:
    """Whether `signals.py search --signal NAME` ran on the complete table and each of its picks
    beat the median feasible architecture."""
    path = ground_truth.RESULTS / f"signals_search_{signal}.json"
    check = json.loads(path.read_text()) if path.is_file() else {}
    return bool(check.get("ground_truth_complete")) and all(p["beats_median"] for p in check["picks"].values())


def write_fidelity(record: dict, partial: str | None = None) -> dict:
    """`search/fidelity.json`; from a `partial` ground truth every signal says so and the defaults
    stay what the file had (MAdds when it had none). A better measured signal becomes a default
    only after its search check passed; until then the file names it as pending."""
    scored, truth = record["signals"], record["ground_truth"]
    rows = search_signal_rows(scored)
    setting = (f"the built-in setting ({acc.SPACE} at {acc.RESOLUTION}x{acc.RESOLUTION}, synthetic data, "
               f"{truth['epochs']:g} epochs stand-alone)")
    signals = {signal: {"row": row, "archs": scored[row]["n"], "setting": setting,
                        "kendall": round(scored[row]["kendall"], 4), "spearman": round(scored[row]["spearman"], 4),
                        "noise_floor": truth["noise_floor"], "seconds": scored[row]["seconds"]}
               | ({"partial": partial} if partial else {})
               for signal, row in rows.items()}
    before = json.loads(FIDELITY.read_text()) if FIDELITY.is_file() else {}
    shipped = {"source": "benchmarks/results/signals.md",
               "default_rule": f"highest Kendall tau among signals costing <= {DEFAULT_RUN_SEARCH_MINUTES:g} min for "
                               f"the default run's {DEFAULT_RUN_EVALUATIONS} evaluations, needing no training, once "
                               "the ground truth is complete and `signals.py search --signal NAME` on it found its "
                               "picks better than the median feasible architecture at all three budgets",
               "signals": signals}
    for key, data_free in (("default", False), ("default_without_data", True)):
        current = before.get(key, "madds")
        best = None if partial else choose_default(scored, rows, data_free=data_free)
        shipped[key] = best if best is not None and (best == current or search_check_passed(best)) else current
        if best is not None and shipped[key] != best:
            shipped[f"{key}_pending"] = {"signal": best, "waits_for": f"python benchmarks/signals.py search "
                                                                     f"--signal {best} (on the complete table)"}
    write_atomic(FIDELITY, json.dumps(shipped, indent=1) + "\n")
    return shipped


def run_search_check(args) -> dict:
    """`tdbnas search` at each budget with `args.signal` (the default signal unless given); its
    pick's ground-truth mAP (trained stand-alone with the table's recipe if new) against the median
    feasible architecture's."""
    import subprocess

    from tdbnas.search.signals import DEFAULT_SIGNAL

    signal = args.signal or DEFAULT_SIGNAL
    truth = json.loads((ground_truth.RESULTS / "ground_truth.json").read_text())
    rows = [{**r, "truth": r["mAP_mean"]} for r in truth["archs"] if r["mAP_mean"] is not None]
    head = json.dumps(acc.HEAD_SETTINGS)
    picks = {}
    for q, budget in ((float(q), v) for q, v in truth["budgets_ms"].items()):
        out = OUT / "search" / f"{signal}-q{q:g}"
        command = [sys.executable, "-m", "tdbnas.cli.main", "search", "--space", acc.SPACE, "--resolution",
                   str(acc.RESOLUTION), "--num-classes", str(acc.NUM_CLASSES), "--head", head, "--profile", "cpu",
                   "--budget-ms", f"{budget:.6f}", "--table", str(acc.table_path()), "--signal", signal,
                   "--data", str(acc.dataset()), "--population", "16", "--parents", "4", "--mutations", "6",
                   "--crossovers", "6", "--generations", "8", "--out", str(out), "--quiet"]
        started = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        arch = (out / "best_arch.txt").read_text().strip()
        result = json.loads((out / "result.json").read_text())
        # A search that resumed with nothing left to evaluate took no search time: say so, not "3 s".
        searched = not result.get("resumed") or result.get("evaluated_in_last_session", 0) > 0
        picks[q] = {"budget_ms": budget, "arch": arch,
                    "search_seconds": time.perf_counter() - started if searched else None,
                    "command": " ".join(command)}
    jobs = [acc.TrainingJob(p["arch"], 0, ground_truth.EPOCHS, OUT / "search" / "runs" /
                            f"{acc.run_name(p['arch'])}-e{ground_truth.EPOCHS:g}-s0")
            for p in picks.values() if p["arch"] not in {r["arch"] for r in rows}]
    acc.run_pool(jobs, workers=args.workers, threads=args.threads)
    for pick in picks.values():
        known = next((r for r in rows if r["arch"] == pick["arch"]), None)
        job = next((j for j in jobs if j.arch == pick["arch"]), None)
        pick["mAP"] = known["truth"] if known else job.result()["mAP"]
        pick["in_table"] = known is not None
        feasible = [r["truth"] for r in rows if r["predicted_ms"] <= pick["budget_ms"]]
        pick["feasible_in_table"] = len(feasible)
        pick["median_feasible_mAP"] = float(np.median(feasible))
        pick["best_feasible_mAP"] = max(feasible)
        pick["beats_median"] = pick["mAP"] > pick["median_feasible_mAP"]
    record = {"signal": signal, "default": signal == DEFAULT_SIGNAL, "ground_truth_runs": truth["runs_done"],
              "ground_truth_complete": truth["runs_done"] == truth["runs_total"],
              "picks": {f"{q:g}": p for q, p in picks.items()}}
    which = "the default signal" if signal == DEFAULT_SIGNAL else "the signal"
    lines = [f"`tdbnas search` with {which} `{signal}` at the three budgets (population 16, "
             "8 generations: the default run's search); the pick's stand-alone mAP (same recipe and epochs as the "
             "ground truth; trained for this check when the table lacks it) against the table's feasible members. "
             "`search s` is the search's wall time on this shared machine (`resumed`: its run database already held "
             "every evaluation).",
             "", "| budget | ms | pick mAP | in table | median feasible | best feasible | feasible | beats median | "
             "search s | pick |", "|---|---|---|---|---|---|---|---|---|---|"]
    for q, p in picks.items():
        lines.append(f"| q{q * 100:g} | {p['budget_ms']:.3f} | {p['mAP']:.4f} | {'yes' if p['in_table'] else 'no'} | "
                     f"{p['median_feasible_mAP']:.4f} | {p['best_feasible_mAP']:.4f} | {p['feasible_in_table']} | "
                     f"{'yes' if p['beats_median'] else 'NO'} | "
                     + ("resumed" if p["search_seconds"] is None else f"{p['search_seconds']:.0f}")
                     + f" | `{p['arch']}` |")
    write_results(f"signals_search_{signal}", record, "\n".join(lines))
    print("\n".join(lines))
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("zeroshot", "supernet", "short", "report", "search"))
    parser.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), help="supernet variants (default: all)")
    parser.add_argument("--retime", action="store_true",
                        help="zeroshot: score every architecture again to time it (run on an idle machine)")
    parser.add_argument("--signal", help="search: the signal to check (default: the shipped default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    ground_truth.restore()
    restore()
    {"zeroshot": run_zeroshot, "supernet": run_supernet, "short": run_short, "report": run_report,
     "search": run_search_check}[args.phase](args)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
