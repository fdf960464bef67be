"""The README's main job as a new user meets it: a fresh clone, a new virtual environment, the
first command verbatim, an empty latency cache.

    python benchmarks/tdbnas_run_default.py            # -> results/tdbnas_run_default.{json,md}
    python benchmarks/tdbnas_run_default.py --keep /tmp/fresh-run   # keep the clone, venv and run

Times the install and `tdbnas run` separately, reads every stage's wall time and the run's own
results (float and int8 mAP, measured vs predicted vs budget latency, the signal, the winner's
share of the budget), records the load average before and after (the acceptance asks for an
otherwise idle machine) and renders the HTML report in headless Chromium when it is installed
(`report_screenshot.py`). The clone is of this repository's committed HEAD: uncommitted changes
are not measured, as CI would not see them either.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "latency", "supernet", "search", "retrain", "export", "measure", "report")
TARGET_MINUTES, TARGET_MAP, INT8_TOLERANCE_AP = 20.0, 0.30, 1.0


def readme_main_command() -> str:
    """The README's first command block: `pip install ... && tdbnas run` (what .ci/run runs too)."""
    for line in (REPO / "README.md").read_text().splitlines():
        if re.match(r"^pip install .*&& *tdbnas run", line):
            return line.strip()
    raise SystemExit("README.md has no `pip install ... && tdbnas run` line")


def timed(command: str, cwd: Path, env: dict, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"\n$ {command}\n")
        handle.flush()
        subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                       check=True)
    return time.perf_counter() - started


def measure(work: Path) -> dict:
    clone, venv = work / "fresh", work / "venv"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv), TDBNAS_CACHE=str(work / "cache"))
    command = readme_main_command()
    install, run = (part.strip() for part in command.split("&&", 1))
    log = work / "log.txt"
    load_before = os.getloadavg()
    install_seconds = timed(install, clone, env, log)
    run_seconds = timed(run, clone, env, log)
    load_after = os.getloadavg()
    out = clone / "runs" / "tdbnas"
    stages = {s: json.loads((out / s / "stage.json").read_text())["seconds"] for s in STAGES}
    results = json.loads((out / "report" / "results.json").read_text())
    return {"commit": head, "command": command, "install_seconds": install_seconds, "run_seconds": run_seconds,
            "stage_seconds": stages, "load_average_before": load_before, "load_average_after": load_after,
            "summary": summarise(results), "run_dir": str(out), "log": str(log)}


def summarise(r: dict) -> dict:
    latency, measured, verify = r["latency"], r["measure"]["latency"], r["export"]["verify"]
    profile = latency["profile"]
    return {"signal": r["search"]["signal"], "fidelity": r["search"].get("fidelity"),
            "evaluations": r["search"]["evaluations"], "arch": r["search"]["best_arch"],
            "budget_ms": latency["budget_ms"], "predicted_ms": r["search"]["predicted_ms"][profile],
            "budget_use": r["search"]["budget_use"], "measured_ms": measured.get("measured_ms"),
            "within_budget": measured.get("within_budget"), "retrain_epochs": r["retrain"]["epochs"],
            "retrain_minutes": r["retrain"]["train_seconds"] / 60,
            "float_mAP_val": r["retrain"]["val_metrics"].get("mAP"),
            "verify_images": verify["images"], "verify_float_mAP": verify["torch"]["mAP"],
            "verify_int8_mAP": verify["tflite"]["mAP"],
            "int8_minus_float_AP": 100 * (verify["tflite"]["mAP"] - verify["torch"]["mAP"]),
            "plain_interpreter": {k: v for k, v in r["measure"]["plain_interpreter"].items()
                                  if k not in ("samples", "detections")}}


def render(record: dict) -> str:
    s, m = record["summary"], record["measured"]
    minutes = m["run_seconds"] / 60
    checks = [("wall time of `tdbnas run`", f"{minutes:.1f} min", minutes <= TARGET_MINUTES,
               f"<= {TARGET_MINUTES:g} min"),
              ("final float mAP@[.5:.95] (built-in val, 500 images)", f"{s['float_mAP_val']:.4f}",
               s["float_mAP_val"] >= TARGET_MAP, f">= {TARGET_MAP}"),
              (f"int8 - float on {s['verify_images']} val images", f"{s['int8_minus_float_AP']:+.2f} AP "
               f"({s['verify_int8_mAP']:.4f} vs {s['verify_float_mAP']:.4f})",
               abs(s["int8_minus_float_AP"]) <= INT8_TOLERANCE_AP, f"within {INT8_TOLERANCE_AP:g} AP"),
              ("measured latency (int8, 1 thread, no post-processing op)",
               f"{s['measured_ms']:.3f} ms vs budget {s['budget_ms']:.3f} ms (predicted {s['predicted_ms']:.3f})",
               bool(s["within_budget"]), "within the budget")]
    lines = [f"The README's first command, verbatim, in a new virtual environment on a fresh clone of commit "
             f"`{m['commit'][:10]}` with an empty latency cache: `{m['command']}`.", "",
             f"Install {m['install_seconds'] / 60:.1f} min; `tdbnas run` **{minutes:.1f} min**. Load average "
             f"before {m['load_average_before'][0]:.2f}, after {m['load_average_after'][0]:.2f} (1-minute; "
             "2 cores).", "", "| check | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {name} | {value} | {target} | {'yes' if ok else '**no**'} |" for name, value, ok, target in checks]
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in m["stage_seconds"].items()]
    fidelity = s["fidelity"]
    lines += ["", f"Search: signal `{s['signal']}`" + (f" (measured Kendall tau {fidelity['kendall']:.2f} against "
                                                        "stand-alone training, `signals.md`)" if fidelity else "")
              + f", {s['evaluations']} candidates; the winner uses {100 * s['budget_use']:.0f} % of the budget. "
              f"Final training: {s['retrain_epochs']:g} epochs in {s['retrain_minutes']:.1f} min from scratch.",
              "", f"Winner: `{s['arch']}`"]
    plain = s["plain_interpreter"]
    if isinstance(plain, dict) and "found" in plain:
        lines.append(f"\nPlain interpreter (no tdbnas, torch or TensorFlow): {plain['found']}/{plain['objects']} "
                     f"ground-truth objects found on {plain['images']} val images.")
    if record.get("screenshot"):
        lines.append(f"\nThe HTML report in headless Chromium: [{Path(record['screenshot']).name}]"
                     f"({Path(record['screenshot']).name}).")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="tdbnas-default-"))
    work.mkdir(parents=True, exist_ok=True)
    measured = measure(work)
    record = {"measured": measured, "summary": measured.pop("summary")}
    screenshot = RESULTS / "tdbnas_run_report.png"
    shot = subprocess.run([sys.executable, str(Path(__file__).with_name("report_screenshot.py")),
                           str(Path(measured["run_dir"])), "--out", str(screenshot)], capture_output=True, text=True)
    record["screenshot"] = str(screenshot) if shot.returncode == 0 else None
    if shot.returncode != 0:
        print(f"no screenshot: {shot.stderr.strip().splitlines()[-1] if shot.stderr.strip() else shot.returncode}")
    markdown = render(record)
    write_results("tdbnas_run_default", record, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
