"""The report of a `tdbnas run`: Markdown and a self-contained HTML page (images inlined).

What a reader wants from a search: which network was found (layer table and a diagram), how it
sits among everything evaluated (accuracy vs latency with the front, the budget and the
reference architectures), whether the latency it was searched under holds on the device
(predicted vs measured), what int8 costs (float vs int8 mAP on the same images), and the
commands that reproduce it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Below this share of the budget, the report says the winner leaves latency unused, and why.
LOW_BUDGET_USE = 0.6

KIND_COLOURS = {"ir": "#4C72B0", "er": "#DD8452", "tk": "#55A868", "ds": "#8172B3", "conv": "#937860",
                "sh": "#DA8BC3", "xc": "#8C8C8C"}


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Labels drawn above an axis (detections at an image's top edge, reference names) can
        # leave tight_layout no room; bbox_inches="tight" below grows the canvas to keep them.
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def diagram(arch, resolution: int) -> bytes:
    """Layers left to right, one box per layer coloured by kind, height by output width."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    configs = [c for c in arch.trace(resolution) if not c.layer.is_skip]
    figure, axes = plt.subplots(figsize=(max(8.0, 0.45 * len(configs)), 2.8))
    for index, config in enumerate(configs):
        kind = config.layer.token().split("_")[0]
        height = math.log2(config.out_channels)
        axes.add_patch(Rectangle((index, -height / 2), 0.8, height, color=KIND_COLOURS.get(kind, "#999999")))
        axes.text(index + 0.4, height / 2 + 0.2, str(config.out_channels), ha="center", fontsize=6)
        if config.stride == 2:
            axes.text(index + 0.4, -height / 2 - 0.7, "s2", ha="center", fontsize=6)
    axes.set_xlim(-0.5, len(configs) + 0.5)
    axes.set_ylim(-6, 6)
    axes.axis("off")
    kinds = sorted({c.layer.token().split("_")[0] for c in configs})
    axes.legend(handles=[Patch(color=KIND_COLOURS.get(k, "#999999"), label=k) for k in kinds], loc="lower right",
                fontsize=7, ncol=len(kinds))
    axes.set_title("searched backbone: one box per layer (height: log2 of output channels)", fontsize=9)
    return _png(figure)


def search_plot(evaluations: list[dict], profile: str, budget: float, references: dict[str, float],
                best: str, signal: str = "supernet") -> bytes:
    """All evaluated candidates (predicted latency vs their signal), the front, the budget, references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tdbnas.search.pareto import pareto_front

    latency = [e["latency_ms"][profile] for e in evaluations]
    score = [e["score"] for e in evaluations]
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    axes.scatter(latency, score, s=14, color="#9aa7b8", label=f"evaluated ({signal})")
    front = sorted(pareto_front(score, latency), key=lambda i: latency[i])
    axes.plot([latency[i] for i in front], [score[i] for i in front], "-o", color="#C44E52", markersize=4,
              label="Pareto front")
    chosen = next(e for e in evaluations if e["arch"] == best)
    axes.scatter([chosen["latency_ms"][profile]], [chosen["score"]], s=80, marker="*", color="#2E7D32",
                 label="searched", zorder=5)
    axes.axvline(budget, color="black", linestyle="--", linewidth=1, label=f"budget {budget:.2f} ms")
    # A reference far slower than anything in the search would squeeze the candidates into a
    # corner; the text beside the plot names every reference with its latency anyway.
    shown_up_to = 1.5 * max(max(latency), budget)
    for name, ms in ((n, ms) for n, ms in references.items() if ms <= shown_up_to):
        axes.axvline(ms, color="#8172B3", linestyle=":", linewidth=1)
        axes.text(ms, axes.get_ylim()[1], f" {name}", rotation=90, va="top", fontsize=7, color="#8172B3")
    axes.set_xlabel(f"predicted latency on {profile} (ms)")
    axes.set_ylabel(SIGNAL_AXES.get(signal, signal))
    axes.legend(fontsize=7, loc="lower right")
    return _png(figure)


SIGNAL_AXES = {"supernet": "mAP on the search split (supernet, BN recalibrated)",
               "entropy": "MAE-DET entropy score at init", "zen": "Zen-score at init",
               "naswot": "NASWOT score at init", "synflow": "SynFlow score at init (log)",
               "gradnorm": "gradient norm at init (log)", "madds": "detector multiply-adds",
               "params": "detector parameters"}


def detections_figure(samples: list[dict], images: Path, labels: list[str]) -> bytes:
    """Val images with the int8 model's detections (from the plain-interpreter check)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    figure, axes = plt.subplots(1, len(samples), figsize=(3.2 * len(samples), 3.4))
    for axis, sample in zip(np.atleast_1d(axes), samples):
        picture = Image.open(images / sample["file_name"]).convert("RGB")
        width, height = picture.size
        axis.imshow(picture)
        for (y0, x0, y1, x1), label, score in zip(sample["boxes_yxyx"], sample["labels"], sample["scores"]):
            axis.add_patch(Rectangle((x0 * width, y0 * height), (x1 - x0) * width, (y1 - y0) * height, fill=False,
                                     color="#00e676", linewidth=1.5))
            name = labels[label] if 0 <= label < len(labels) else str(label)
            axis.text(x0 * width, y0 * height - 1, f"{name} {score:.2f}", color="black", fontsize=6,
                      backgroundcolor="#00e676")
        axis.set_title(sample["file_name"], fontsize=7)
        axis.axis("off")
    figure.suptitle("int8 TFLite detections (plain interpreter, score >= 0.3)", fontsize=9)
    return _png(figure)


def minutes_figure(seconds: dict[str, float]) -> bytes:
    """Where the run's minutes went, one bar per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(seconds)
    figure, axes = plt.subplots(figsize=(6.5, 2.4))
    axes.barh(stages[::-1], [seconds[s] / 60 for s in stages[::-1]], color="#4C72B0")
    for index, stage in enumerate(stages[::-1]):
        axes.text(seconds[stage] / 60, index, f" {seconds[stage] / 60:.1f}", va="center", fontsize=7)
    axes.set_xlabel("minutes")
    axes.set_title(f"where the {sum(seconds.values()) / 60:.1f} minutes went", fontsize=9)
    return _png(figure)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _f(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def _metric(value: Any) -> str:
    """A COCO metric; COCOeval's -1 means the val set has no objects of that size."""
    return "n/a (no such objects)" if isinstance(value, int | float) and value < 0 else _f(value)


def _figures(makers: dict[str, Callable[[], bytes]], out: Path) -> tuple[dict[str, bytes], list[str]]:
    """Render each figure; one that cannot be drawn (no matplotlib, an unreadable image) is
    skipped with a note instead of failing the report at the end of a long run."""
    images, notes = {}, []
    for name, make in makers.items():
        try:
            images[name] = make()
        except Exception as exc:  # noqa: BLE001 - a missing plot must never cost the run
            notes.append(f"{name} not drawn ({type(exc).__name__}: {exc})")
            continue
        (out / name).write_bytes(images[name])
    return images, notes


def budget_note(run, evaluations: list[dict]) -> str | None:
    """Why the winner leaves latency unused, when it uses less than LOW_BUDGET_USE of the budget."""
    search, latency = run.results["search"], run.results["latency"]
    profile, budget = latency["profile"], latency["budget_ms"]
    used = search["predicted_ms"][profile] / budget
    if used >= LOW_BUDGET_USE:
        return None
    winner = next((e for e in evaluations if e["arch"] == search["best_arch"]), None)
    slower = [e for e in evaluations if winner and winner["latency_ms"][profile] < e["latency_ms"][profile] <= budget]
    return (f"The winner uses {100 * used:.0f} % of the {budget:.2f} ms budget. Of the {len(evaluations)} candidates "
            f"the search evaluated, {len(slower)} were slower but within the budget; the signal `{search['signal']}` "
            "scored every one of them lower" + (" and successive halving's short training kept this one" if
                                                search.get("halving") else "") +
            ". A ranking signal that prefers small networks (see its measured agreement above) leaves latency unused; "
            "a larger budget share is only worth it where the signal says larger is better.")


def write_report(run) -> tuple[Path, Path]:
    from tdbnas.detection.data import find_split
    from tdbnas.search.signals import fidelity_sentence
    from tdbnas.spaces import resolve_arch
    from tdbnas.spaces.atomic import write_text_atomic
    from tdbnas.spaces.describe import layer_rows

    r, out = run.results, run.directory("report")
    arch = resolve_arch(r["search"]["best_arch"])
    latency, measure, export = r["latency"], r["measure"], r["export"]
    signal = r["search"].get("signal", "supernet")
    evaluations = [e.to_json() for e in _evaluations(run)]
    plain = measure["plain_interpreter"]
    seconds = {stage: float(r[stage]["seconds"]) for stage in r if isinstance(r[stage], dict) and "seconds" in r[stage]}
    val_images = find_split(run.data_root, run.config["data"]["val_split"]).images
    images, notes = _figures({
        "diagram.png": lambda: diagram(arch, run.resolution),
        "search.png": lambda: search_plot(evaluations, latency["profile"], latency["budget_ms"],
                                          latency["references_ms"], r["search"]["best_arch"], signal),
        "detections.png": lambda: detections_figure(plain["samples"], Path(val_images), r["data"]["labels"]),
        "minutes.png": lambda: minutes_figure(seconds),
    }, out)
    verify = export["verify"]
    measured = measure["latency"]
    retrain = r["retrain"]
    summary = [
        ["space", f"`{run.config['space']}` at {run.resolution}x{run.resolution}"],
        ["latency profile", f"`{latency['profile']}` ({latency['kind']}, {latency['runtime_version']})"],
        ["budget", f"{latency['budget_ms']:.3f} ms ({latency['budget_rule']})" + (
            "" if latency["space_min_ms"] is None
            else f"; the space reaches {latency['space_min_ms']:.3f} ms at best")],
        ["predicted latency", f"{r['search']['predicted_ms'][latency['profile']]:.3f} ms "
                              f"({100 * r['search']['predicted_ms'][latency['profile']] / latency['budget_ms']:.0f} % "
                              "of the budget)"],
        ["measured latency", "-" if "skipped" in measured else
         f"{measured['measured_ms']:.3f} ms ({measured['statistic']}; with the post-processing op "
         f"{measured['measured_with_postprocess_ms']:.3f} ms) -> "
         f"{'within' if measured['within_budget'] else 'OVER'} the budget"],
        ["accuracy signal", f"`{signal}` over {r['search']['evaluations']} candidates" + (
            f", measured Kendall tau {r['search']['fidelity']['kendall']:.2f} vs stand-alone training"
            if r["search"].get("fidelity") else ", agreement with stand-alone training not measured")],
        ["final training", f"{retrain['init']}, {retrain.get('epochs', '-')} epochs in "
                           f"{retrain['train_seconds'] / 60:.1f} min"],
        ["mAP@[.5:.95] float, torch (val)", _f(retrain["val_metrics"].get("mAP"))],
        [f"mAP float vs int8 on {verify['images']} val images", f"{_f(verify['torch']['mAP'])} vs "
                                                                 f"{_f(verify['tflite']['mAP'])} "
                                                                 f"({100 * verify['mAP_difference']:+.2f} AP)"],
        ["plain interpreter (no tdbnas)", f"{plain['found']}/{plain['objects']} ground-truth objects found "
                                          f"(IoU >= 0.5, score >= {plain['score_threshold']}) on "
                                          f"{plain['images']} val images"],
        ["ops not int8 (outside post-processing)", ", ".join(export["non_int8_outside_postprocess"]) or "none"],
        ["Edge TPU (documented op table)", export["edgetpu"]["summary"]],
        ["model", f"`{export['tflite']}` ({export['bytes'] / 1e6:.2f} MB)"],
        ["wall time", f"{sum(seconds.values()) / 60:.1f} min"],
    ]
    rows = [[row[0], row[2], row[4], row[5], row[7], row[8], row[9], row[10], row[11]]
            for row in layer_rows(arch, (run.resolution, run.resolution), 1.0)]
    command = " ".join(shlex.quote(a) for a in ["tdbnas", *sys.argv[1:]]) if sys.argv[1:] else "tdbnas run"
    note = budget_note(run, evaluations)
    halving = r["search"].get("halving")
    search_text = (f"{r['search']['evaluations']} candidates evaluated. {fidelity_sentence(signal)} Reference "
                   "architectures are drawn at their predicted latency on the same profile: "
                   + ", ".join(f"{k} {v:.2f} ms" for k, v in latency["references_ms"].items()) + ".")
    if halving:
        search_text += "\n\nSuccessive halving by short stand-alone training (mAP on the search split): " + "; ".join(
            f"{rung['epochs']:g} epochs: " + ", ".join(f"{v:.3f}" for v in sorted(rung["scores"].values(),
                                                                                  reverse=True))
            for rung in halving) + "."
    if note:
        search_text += f"\n\n**Budget.** {note}"
    sections = [
        ("Summary", _table(["", ""], summary)),
        ("Searched architecture", f"`{arch.encode()}`\n\n![diagram](diagram.png)\n\n" +
         _table(["#", "layer", "k", "s", "in>out", "inner", "res", "out", "endpoint"], rows)),
        ("Search", search_text + "\n\n![search](search.png)"),
        ("Latency", _table(["quantity", "ms"], [[f"space, {q} quantile of 2000 random members", _f(v, 3)]
                                                for q, v in latency["space_latency_quantiles_ms"].items()]
                           + ([["predicted (searched)", _f(measured.get("predicted_ms"), 3)],
                               ["measured (searched, raw outputs)", _f(measured.get("measured_ms"), 3)]]
                              if "skipped" not in measured else [["measured", measured["skipped"]]]))),
        ("Accuracy", _table(["metric", "torch float", "TFLite int8"],
                            [[k, _metric(verify["torch"][k]), _metric(verify["tflite"][k])]
                             for k in ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium", "mAP_large")])
         + "\n\n![detections](detections.png)"),
        ("Where the minutes went", _table(["stage", "minutes"], [[k, _f(v / 60, 1)] for k, v in seconds.items()])
         + "\n\n![minutes](minutes.png)"),
        ("Reproduce", f"```\n{command}\n```\n\nResolved settings: `{run.out / 'config.yaml'}`. Rerunning the "
                      "same command skips every finished stage. Stage records: `<out>/<stage>/stage.json`."),
    ]
    if notes:
        sections.append(("Notes", "\n".join(f"- {n}" for n in notes)))
    markdown = f"# tdbnas run: {run.out}\n\n" + "\n\n".join(f"## {t}\n\n{b}" for t, b in sections) + "\n"
    markdown = "\n".join(line for line in markdown.splitlines()
                         if not (line.startswith("![") and line.split("](")[1].rstrip(")") not in images))
    md_path = write_text_atomic(out / "report.md", markdown + "\n")
    html_path = write_text_atomic(out / "report.html", _html(markdown, images))
    write_text_atomic(out / "results.json", json.dumps(r, indent=2, default=str))
    return md_path, html_path


def headline(run) -> list[str]:
    """The numbers `tdbnas run` prints at the end."""
    r = run.results
    latency, measured = r["latency"], r["measure"]["latency"]
    verify = r["export"]["verify"]
    lines = [f"searched: {r['search']['best_arch']}",
             f"mAP@[.5:.95] (val): float {_f(r['retrain']['val_metrics'].get('mAP'))}, int8 "
             f"{_f(verify['tflite']['mAP'])} on {verify['images']} images (float {_f(verify['torch']['mAP'])})"]
    if "skipped" in measured:
        lines.append(f"latency: predicted {r['search']['predicted_ms'][latency['profile']]:.2f} ms on "
                     f"{latency['profile']} (budget {latency['budget_ms']:.2f} ms; {measured['skipped']})")
    else:
        verdict = "within" if measured["within_budget"] else "OVER"
        lines.append(f"latency: measured {measured['measured_ms']:.2f} ms, predicted "
                     f"{measured['predicted_ms']:.2f} ms, budget {latency['budget_ms']:.2f} ms ({verdict})")
    lines.append(f"model: {r['export']['tflite']}")
    return lines


def _evaluations(run):
    from tdbnas.search.rundb import RunDB

    db = RunDB(run.out / "search" / "search.sqlite")
    try:
        return db.evaluations()
    finally:
        db.close()


def _html(markdown: str, images: dict[str, bytes]) -> str:
    """A small Markdown subset (headings, tables, code, images) to self-contained HTML."""
    body, in_table, in_code = [], False, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            body.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("![") and "](" in line:
            name = line.split("](")[1].rstrip(")")
            data = base64.b64encode(images[name]).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;} table{border-collapse:collapse;} "
             "td{border:1px solid #ccc;padding:2px 6px;font-size:13px;} code{background:#f3f3f3;word-break:break-all;} "
             "img{max-width:100%;}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" + \
        "\n".join(body) + "</body></html>\n"


def _inline(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
