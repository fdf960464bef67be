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
from pathlib import Path
from typing import Any

KIND_COLOURS = {"ir": "#4C72B0", "er": "#DD8452", "tk": "#55A868", "ds": "#8172B3", "conv": "#937860",
                "sh": "#DA8BC3", "xc": "#8C8C8C"}


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
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
                best: str) -> bytes:
    """All evaluated candidates (predicted latency vs fitness), the front, the budget, references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tdbnas.search.pareto import pareto_front

    latency = [e["latency_ms"][profile] for e in evaluations]
    score = [e["score"] for e in evaluations]
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    axes.scatter(latency, score, s=14, color="#9aa7b8", label="evaluated (supernet fitness)")
    front = sorted(pareto_front(score, latency), key=lambda i: latency[i])
    axes.plot([latency[i] for i in front], [score[i] for i in front], "-o", color="#C44E52", markersize=4,
              label="Pareto front")
    chosen = next(e for e in evaluations if e["arch"] == best)
    axes.scatter([chosen["latency_ms"][profile]], [chosen["score"]], s=80, marker="*", color="#2E7D32",
                 label="searched", zorder=5)
    axes.axvline(budget, color="black", linestyle="--", linewidth=1, label=f"budget {budget:.2f} ms")
    for name, ms in references.items():
        axes.axvline(ms, color="#8172B3", linestyle=":", linewidth=1)
        axes.text(ms, axes.get_ylim()[1], f" {name}", rotation=90, va="top", fontsize=7, color="#8172B3")
    axes.set_xlabel(f"predicted latency on {profile} (ms)")
    axes.set_ylabel("mAP on the search split (supernet, BN recalibrated)")
    axes.legend(fontsize=7, loc="lower right")
    return _png(figure)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _f(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def write_report(run) -> tuple[Path, Path]:
    from tdbnas.cli.arch import layer_rows
    from tdbnas.spaces import resolve_arch
    from tdbnas.spaces.atomic import write_text_atomic

    r, out = run.results, run.directory("report")
    arch = resolve_arch(r["search"]["best_arch"])
    latency, measure, export = r["latency"], r["measure"], r["export"]
    evaluations = [e.to_json() for e in _evaluations(run)]
    images = {"diagram.png": diagram(arch, run.resolution),
              "search.png": search_plot(evaluations, latency["profile"], latency["budget_ms"],
                                        latency["references_ms"], r["search"]["best_arch"])}
    for name, data in images.items():
        (out / name).write_bytes(data)
    verify = export["verify"]
    measured = measure["latency"]
    plain = measure["plain_interpreter"]
    summary = [
        ["space", f"`{run.config['space']}` at {run.resolution}x{run.resolution}"],
        ["latency profile", f"`{latency['profile']}` ({latency['kind']}, {latency['runtime_version']})"],
        ["budget", f"{latency['budget_ms']:.3f} ms ({latency['budget_rule']})" + (
            "" if latency["space_min_ms"] is None
            else f"; the space reaches {latency['space_min_ms']:.3f} ms at best")],
        ["predicted latency", f"{r['search']['predicted_ms'][latency['profile']]:.3f} ms"],
        ["measured latency", "-" if "skipped" in measured else
         f"{measured['measured_ms']:.3f} ms ({measured['statistic']}; with the post-processing op "
         f"{measured['measured_with_postprocess_ms']:.3f} ms) -> "
         f"{'within' if measured['within_budget'] else 'OVER'} the budget"],
        ["supernet fitness (search split)", _f(r["search"]["fitness"])],
        ["mAP@[.5:.95] float, torch (val)", _f(r["retrain"]["val_metrics"].get("mAP"))],
        [f"mAP float vs int8 on {verify['images']} val images", f"{_f(verify['torch']['mAP'])} vs "
                                                                 f"{_f(verify['tflite']['mAP'])} "
                                                                 f"({100 * verify['mAP_difference']:+.2f} AP)"],
        ["plain interpreter (no tdbnas)", f"{plain['found']}/{plain['objects']} ground-truth objects found "
                                          f"(IoU >= 0.5, score >= {plain['score_threshold']}) on "
                                          f"{plain['images']} val images"],
        ["ops not int8 (outside post-processing)", ", ".join(export["non_int8_outside_postprocess"]) or "none"],
        ["Edge TPU (documented op table)", export["edgetpu"]["summary"]],
        ["model", f"`{export['tflite']}` ({export['bytes'] / 1e6:.2f} MB)"],
    ]
    rows = [[row[0], row[2], row[4], row[5], row[7], row[8], row[9], row[10], row[11]]
            for row in layer_rows(arch, (run.resolution, run.resolution), 1.0)]
    command = " ".join(shlex.quote(a) for a in ["tdbnas", *sys.argv[1:]]) if sys.argv[1:] else "tdbnas run"
    sections = [
        ("Summary", _table(["", ""], summary)),
        ("Searched architecture", f"`{arch.encode()}`\n\n![diagram](diagram.png)\n\n" +
         _table(["#", "layer", "k", "s", "in>out", "inner", "res", "out", "endpoint"], rows)),
        ("Search", f"{r['search']['evaluations']} candidates evaluated on the supernet (BN recalibrated per "
                   f"path). Reference architectures are drawn at their predicted latency on the same profile: "
                   + ", ".join(f"{k} {v:.2f} ms" for k, v in latency["references_ms"].items()) +
                   ".\n\n![search](search.png)"),
        ("Latency", _table(["quantity", "ms"], [[f"space, {q} quantile of 2000 random members", _f(v, 3)]
                                                for q, v in latency["space_latency_quantiles_ms"].items()]
                           + ([["predicted (searched)", _f(measured.get("predicted_ms"), 3)],
                               ["measured (searched, raw outputs)", _f(measured.get("measured_ms"), 3)]]
                              if "skipped" not in measured else [["measured", measured["skipped"]]]))),
        ("Accuracy", _table(["metric", "torch float", "TFLite int8"],
                            [[k, _f(verify["torch"][k]), _f(verify["tflite"][k])]
                             for k in ("mAP", "mAP_50", "mAP_75", "mAP_small", "mAP_medium")])),
        ("Reproduce", f"```\n{command}\n```\n\nResolved settings: `{run.out / 'config.yaml'}`. Rerunning the "
                      "same command skips every finished stage. Stage records: `<out>/<stage>/stage.json`."),
    ]
    markdown = f"# tdbnas run: {run.out}\n\n" + "\n\n".join(f"## {t}\n\n{b}" for t, b in sections) + "\n"
    md_path = write_text_atomic(out / "report.md", markdown)
    html_path = write_text_atomic(out / "report.html", _html(markdown, images))
    write_text_atomic(out / "results.json", json.dumps(r, indent=2, default=str))
    return md_path, html_path


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
             "td{border:1px solid #ccc;padding:2px 6px;font-size:13px;} code{background:#f3f3f3;} "
             "img{max-width:100%;}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" + \
        "\n".join(body) + "</body></html>\n"


def _inline(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
