"""Learned latency models from few end-to-end samples, on real measurements of 5,000 FBNet-space
networks (HELP's development set: three Xeon CPUs and two GPUs, `../shared/data/help_fbnet_dev`).

For each device, k in {50, 100, 200} training networks drawn at random (5 seeds), every other
network is predicted. Models, all fitted on the k samples only:

  shared      `tdbnas.latency.cost_model` default: shared physics features of the `fbnet` space
              (per op kind count / MAdds / params / activations, op counts, per-slot deviations
              held back harder), ridge penalty and deviation factor chosen by 5-fold CV inside
              the k samples
  op-count    least squares on how often each of the 9 blocks is chosen (the baseline that beat
              the old model on phones)
  madds       least squares on total MAdds
  onehot-cv   the TuNAS one-hot layout (176 per-slot costs) with the CV-chosen penalty
  onehot-old  the old default: one-hot, unpenalised least squares (refused below 177 samples),
              and with the raw-unit ridge 0.01 the old `--help` suggested

and, where another device of the same kind is in the file, `shared+offset`: the shared model
fitted on the residual of a base model fitted on all 5,000 networks of that other device (the
"another device's table" base predictor; the base sees other hardware only).

Reported per device and k: Spearman, Kendall, share within +-10 % and median |error| on the
held-out networks, median over seeds (min-max in the JSON). Acceptance (issue 16): Spearman >= 0.90
on each CPU from <= 200 samples and ahead of the op-count regression at every k. Nothing is
tuned on the held-out networks: the penalty grid and the deviation factors are fixed in
`tdbnas.latency.ridge`, and CV picks among them inside the k samples. The feature design was
developed on this set, though: the devices of other kinds that check it are the real test.

    OMP_NUM_THREADS=1 python benchmarks/latency_transfer.py
    python benchmarks/latency_transfer.py --data other_devices.json --ks 50 100 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tdbnas.latency import cost_model as cm  # noqa: E402
from tdbnas.latency.features import SharedFeatures  # noqa: E402
from tdbnas.spaces import CATEGORICAL_SPACES  # noqa: E402

from _common import write_results  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "help_fbnet_dev" / "fbnet_latency.json"
METRICS = ("spearman", "kendall", "within_10_pct", "median_ape_pct")
#: Device families of the development set (a base model comes from another device of the same family).
FAMILIES = {"silver_4114": "cpu", "silver_4210r": "cpu", "gold_6240": "cpu", "titan_rtx_1": "gpu", "2080ti_1": "gpu"}


def ols(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Least squares with an unpenalised intercept (raw-unit ridge: the old model's semantics)."""
    mean_x, mean_y = x_train.mean(axis=0), y_train.mean()
    centred = x_train - mean_x
    if ridge > 0:
        centred = np.vstack([centred, np.sqrt(ridge) * np.eye(x_train.shape[1])])
        target = np.concatenate([y_train - mean_y, np.zeros(x_train.shape[1])])
    else:
        target = y_train - mean_y
    w = np.linalg.lstsq(centred, target, rcond=None)[0]
    return (x_test - mean_x) @ w + mean_y


def report(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    r = cm.error_report(predicted, measured)
    return {"spearman": r.spearman, "kendall": r.kendall, "within_10_pct": r.within_10_pct,
            "median_ape_pct": r.median_ape_pct}


def run_device(space, genomes: np.ndarray, y: np.ndarray, ks, seeds, base: cm.CostModel | None,
               base_name: str | None) -> dict:
    shared = SharedFeatures(space)
    counts, madds = shared.count_matrix(genomes), shared.madds(genomes)[:, None]
    onehot = cm.FeatureLayout.build(space).encode(genomes)
    results: dict = {}
    for k in ks:
        runs: dict[str, list] = {}
        for seed in range(seeds):
            order = np.random.default_rng(seed).permutation(len(y))
            train, test = order[:k], order[k:]

            def add(name: str, predicted, runs=runs, test=test) -> None:
                runs.setdefault(name, []).append(report(predicted, y[test]) if predicted is not None else None)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", cm.CostModelWarning)
                model = cm.fit_cost_model(space, genomes[train], y[train], seed=seed)
                add("shared", model.predict_genomes(genomes[test]))
                add("onehot-cv", cm.fit_cost_model(space, genomes[train], y[train], features="onehot",
                                                   seed=seed).predict_genomes(genomes[test]))
                if base is not None:
                    offset = cm.fit_cost_model(space, genomes[train], y[train], base=base, seed=seed)
                    add("shared+offset", offset.predict_genomes(genomes[test]))
            add("op-count", ols(counts[train], y[train], counts[test]))
            add("madds", ols(madds[train], y[train], madds[test]))
            add("onehot-old", ols(onehot[train], y[train], onehot[test]) if k > onehot.shape[1] else None)
            add("onehot-old-ridge0.01", ols(onehot[train], y[train], onehot[test], ridge=0.01))
            runs.setdefault("_chosen", []).append({"ridge": model.ridge,
                                                   "deviation_ratio": model.metadata["deviation_ratio"]})
        chosen = runs.pop("_chosen")
        results[str(k)] = {"chosen": chosen, "base": base_name, "models": {
            name: None if any(r is None for r in rs) else
            {m: {"median": float(np.median([r[m] for r in rs])), "min": float(min(r[m] for r in rs)),
                 "max": float(max(r[m] for r in rs)), "runs": [r[m] for r in rs]} for m in METRICS}
            for name, rs in runs.items()}}
    return results


def markdown(record: dict) -> str:
    lines = [
        "Learned end-to-end latency models on HELP's FBNet development set: k random training networks per "
        "device, every other network predicted; median over "
        f"{record['seeds']} seeds. `shared` is the `tdbnas latency fit` default (penalty chosen by cross-validation "
        "inside the k samples); `onehot-old` is the previous default (unpenalised one-hot; it cannot fit fewer "
        "samples than its 177 coefficients), `onehot-old-ridge0.01` the previous `--help` example, `onehot-cv` "
        "the one-hot layout with the new CV-chosen penalty. `shared+offset` fits the residual of a base model "
        "trained on all networks of another device of the same family (named in the table).", ""]
    for device, by_k in record["devices"].items():
        lines += [f"## {device} ({record['families'].get(device, '?')})", "",
                  "| k | model | Spearman | Kendall | within ±10 % | median \\|error\\| |", "|---|---|---|---|---|---|"]
        for k, entry in by_k.items():
            for name, values in entry["models"].items():
                label = f"{name} ({entry['base']})" if name == "shared+offset" else name
                if values is None:
                    lines.append(f"| {k} | {label} | refused: fewer samples than coefficients | | | |")
                    continue
                lines.append(f"| {k} | {label} | {values['spearman']['median']:.3f} | {values['kendall']['median']:.3f}"
                             f" | {100 * values['within_10_pct']['median']:.1f}% | "
                             f"{values['median_ape_pct']['median']:.2f}% |")
        lines.append("")
    lines += ["## Acceptance", "", "| device | smallest k ≤ 200 with Spearman ≥ 0.90 | shared > op-count at every k | "
              "verdict |", "|---|---|---|---|"]
    for device, verdict in record["acceptance"].items():
        lines.append(f"| {device} | {verdict['first_k_at_0.90'] or 'none'} | {verdict['ahead_of_op_count']} | "
                     f"{'PASS' if verdict['pass'] else 'FAIL'} |")
    lines += ["", f"Wall time {record['seconds']:.0f} s (one thread)."]
    return "\n".join(lines)


def acceptance(devices: dict, families: dict) -> dict:
    verdicts = {}
    for device, by_k in devices.items():
        spearman = {int(k): e["models"]["shared"]["spearman"]["median"] for k, e in by_k.items()}
        ahead = all(e["models"]["shared"]["spearman"]["median"] > e["models"]["op-count"]["spearman"]["median"]
                    for e in by_k.values())
        reached = [k for k in sorted(spearman) if k <= 200 and spearman[k] >= 0.90]
        first = reached[0] if reached else None
        verdicts[device] = {"first_k_at_0.90": first, "ahead_of_op_count": ahead,
                            "pass": ahead and (first is not None or families.get(device) != "cpu"),
                            "bar_applies": families.get(device) == "cpu"}
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HELP-format JSON: archs + latency_ms")
    parser.add_argument("--ks", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--devices", nargs="*", help="default: every device in the file")
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: run with OMP_NUM_THREADS=1 for the recorded numbers", file=sys.stderr)
    if not args.data.is_file():
        raise SystemExit(f"error: no development data at {args.data} (give --data)")
    data = json.loads(args.data.read_text())
    space = CATEGORICAL_SPACES.get("fbnet")
    genomes = np.array(data["archs"], dtype=np.int64)
    devices = args.devices or list(data["latency_ms"])
    started = time.time()
    results = {}
    for device in devices:
        y = np.array(data["latency_ms"][device], dtype=float)
        family = FAMILIES.get(device)
        others = [d for d in data["latency_ms"] if d != device and family and FAMILIES.get(d) == family]
        base = None
        if others:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", cm.CostModelWarning)
                base = cm.fit_cost_model(space, genomes, np.array(data["latency_ms"][others[0]], dtype=float))
        results[device] = run_device(space, genomes, y, args.ks, args.seeds, base, others[0] if others else None)
        shared = {k: round(v["models"]["shared"]["spearman"]["median"], 3) for k, v in results[device].items()}
        counts = {k: round(v["models"]["op-count"]["spearman"]["median"], 3) for k, v in results[device].items()}
        print(f"{device}: shared Spearman {shared}, op-count {counts} ({time.time() - started:.0f} s)", flush=True)
    record = {"data": str(args.data), "source": data.get("source"), "space": "fbnet", "ks": args.ks,
              "seeds": args.seeds, "families": FAMILIES, "devices": results,
              "acceptance": acceptance(results, FAMILIES), "seconds": time.time() - started}
    json_path, md_path = write_results("latency_transfer", record, markdown(record))
    print(f"-> {json_path}, {md_path}")


if __name__ == "__main__":
    main()
