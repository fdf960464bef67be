"""Modelled Edge TPU profiles against published end-to-end latencies, with leave-one-out error.

Data: `tdbnas/latency/reference/edgetpu_published.json` (sources, dates and what could not be
found in `edgetpu_published.md`): Coral's "Edge TPU performance benchmarks" Table 1 (USB
Accelerator and Dev Board columns) for every listed model the architecture language expresses,
and the Pixel-4 Edge TPU latencies of the TF Object Detection API / MobileDets releases. Three
separate profiles: coral-usb, coral-devboard, pixel4-edgetpu.

Per profile: the bounded least-squares fit of `tdbnas.latency.published.fit_device` on all its
models (checked against the constants `tdbnas.latency.modelled` ships for the Coral profiles),
then leave-one-out: each model predicted by the fit to the others. Sensitivity rows: the SSD
rows at the 224x224 the table prints instead of the 300x300 of the compiled models; without the
per-anchor post-processing term; other per-op overheads. Acceptance (issue 16): Coral USB and Dev
Board leave-one-out median |error| <= 20 % over >= 6 published models.

    python benchmarks/edgetpu_published.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tdbnas.latency import modelled  # noqa: E402
from tdbnas.latency.published import fit_profile, leave_one_out, load_published, terms  # noqa: E402

from _common import write_results  # noqa: E402

PROFILES = {"coral-usb": True, "coral-devboard": True, "pixel4-edgetpu": False}  # profile -> anchor term
SSD_AT_224 = {"mobilenet-v1-ssd-300": 224, "mobilenet-v2-ssd-300": 224}
OVERHEADS = (0.0, 0.0025, 0.005, 0.01)


def median_abs(rows) -> float:
    return float(np.median([abs(r.error_pct) for r in rows]))


def profile_section(published, profile: str, anchors: bool) -> dict:
    models = {m.name: m for m in published.points(profile)}
    fitted = fit_profile(published, profile, anchors=anchors)
    loo = leave_one_out(published, profile, anchors=anchors)
    rows = []
    for r in loo:
        model = models[r.model]
        t = terms(model)
        rows.append({"model": r.model, "title": model.title, "resolution": model.resolution,
                     "head": model.head["kind"], "gmac_eq": t.gmac, "activation_mb": t.moved_mb, "ops": t.ops,
                     "anchors": model.anchors(), "published_ms": r.published_ms,
                     "fitted_ms": fitted.predict(t), "loo_ms": r.predicted_ms, "loo_error_pct": r.error_pct,
                     "approximate": model.approximate})
    sensitivity = [{"variant": "as fitted", "loo_median_pct": median_abs(loo)}]
    if any(m in models for m in SSD_AT_224):
        sensitivity.append({"variant": "SSD rows at 224x224 (the table's label)",
                            "loo_median_pct": median_abs(leave_one_out(published, profile, anchors=anchors,
                                                                       resolutions=SSD_AT_224))})
    if anchors:
        sensitivity.append({"variant": "no post-processing (anchor) term",
                            "loo_median_pct": median_abs(leave_one_out(published, profile, anchors=False))})
    for overhead in OVERHEADS:
        if overhead != modelled.OP_OVERHEAD_MS:
            sensitivity.append({"variant": f"per-op overhead {overhead * 1000:g} us",
                                "loo_median_pct": median_abs(leave_one_out(published, profile, anchors=anchors,
                                                                           op_overhead_ms=overhead))})
    module = modelled.DEVICES.get(profile)
    return {"profile": profile, "hardware": published.profiles[profile]["hardware"], "anchor_term": anchors,
            "fit": fitted.to_json(), "module": None if module is None else
            {"ms_per_gmac": module.ms_per_gmac, "ms_per_mb": module.ms_per_mb},
            "module_loo_median_pct": modelled.CORAL_LOO_MEDIAN_PCT.get(profile),
            "models": rows, "n": len(rows), "loo_median_pct": median_abs(loo),
            "pixel4_profile_ms": {r["model"]: modelled_ms(models[r["model"]], "edgetpu") for r in rows},
            "sensitivity": sensitivity}


def modelled_ms(model, device: str) -> float:
    """A published model priced op by op with a shipped profile's constants (no anchor term)."""
    device_model = modelled.DEVICES[device]
    t = terms(model)
    return t.gmac * device_model.ms_per_gmac + t.moved_mb * device_model.ms_per_mb + t.ops * device_model.op_overhead_ms


def markdown(record: dict) -> str:
    lines = ["Modelled, not measured: analytic per-op Edge TPU model (`tdbnas.latency.modelled`) fitted to published "
             "end-to-end latencies (`tdbnas/latency/reference/edgetpu_published.md`). Leave-one-out: each model "
             "predicted by the fit to all the others of its profile.", ""]
    for section in record["profiles"]:
        fit = section["fit"]
        lines += [f"## {section['profile']}: {section['hardware']}", "",
                  f"Fit on all {section['n']} models: conv {fit['ms_per_gmac']:.4f} ms/GMAC "
                  f"({100 * fit['conv_fraction_of_peak']:.0f}% of the 4 TOPS peak), activations "
                  f"{fit['ms_per_mb']:.4f} ms/MB, post-processing {fit['ms_per_kanchor']:.3f} ms per 1000 anchors, "
                  f"per-op overhead {1000 * fit['op_overhead_ms']:g} us (fixed)."
                  + (f" Module constants: {section['module']['ms_per_gmac']:.4f} ms/GMAC, "
                     f"{section['module']['ms_per_mb']:.5f} ms/MB." if section["module"] and
                     section["profile"].startswith("coral") else ""), "",
                  "| model | input | head | GMAC (conv-eq.) | activation MB | ops | published (ms) | fitted | "
                  "leave-one-out | LOO error | Pixel-4 profile |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in section["models"]:
            flag = " (approx.)" if r["approximate"] else ""
            lines.append(f"| {r['title']}{flag} | {r['resolution']} | {r['head']} | {r['gmac_eq']:.3f} | "
                         f"{r['activation_mb']:.1f} | {r['ops']} | {r['published_ms']:g} | {r['fitted_ms']:.2f} | "
                         f"{r['loo_ms']:.2f} | {r['loo_error_pct']:+.1f}% | "
                         f"{section['pixel4_profile_ms'][r['model']]:.2f} |")
        lines += ["", f"**Leave-one-out median |error| {section['loo_median_pct']:.1f}% over {section['n']} models.**",
                  "", "| variant | LOO median \\|error\\| |", "|---|---|"]
        lines += [f"| {s['variant']} | {s['loo_median_pct']:.1f}% |" for s in section["sensitivity"]]
        lines.append("")
    lines += ["## Not expressible in the architecture language", "",
              "| model | USB (ms) | Dev Board (ms) | why |", "|---|---|---|---|"]
    for entry in record["not_expressible"]:
        lines.append(f"| {entry['title']} | {entry['latency_ms'].get('coral-usb', '')} | "
                     f"{entry['latency_ms'].get('coral-devboard', '')} | {entry['why']} |")
    lines += ["", "## Acceptance", "", "| profile | models | LOO median \\|error\\| | bar (<= 20% over >= 6) |",
              "|---|---|---|---|"]
    for profile, verdict in record["acceptance"].items():
        lines.append(f"| {profile} | {verdict['n']} | {verdict['loo_median_pct']:.1f}% | "
                     f"{'PASS' if verdict['pass'] else 'FAIL'} |")
    lines += ["", "The Pixel-4 profile `edgetpu` keeps its exact 2-point fit (MobileDet-EdgeTPU, MobileNetV2-SSDLite); "
              "its third point, MobileNetEdgeTPU-SSDLite, can only be written approximately (C4 tapped on 96 instead "
              "of 384 channels), and with it the 3-point fit pins the conv rate at the 4 TOPS peak bound."]
    return "\n".join(lines)


def main() -> None:
    published = load_published()
    sections = [profile_section(published, profile, anchors) for profile, anchors in PROFILES.items()]
    acceptance = {s["profile"]: {"n": s["n"], "loo_median_pct": s["loo_median_pct"],
                                 "pass": s["n"] >= 6 and s["loo_median_pct"] <= 20.0}
                  for s in sections if s["profile"].startswith("coral")}
    record = {"profiles": sections, "not_expressible": list(published.not_expressible),
              "sources": published.sources, "acceptance": acceptance}
    for s in sections:
        print(f"{s['profile']}: {s['n']} models, leave-one-out median |error| {s['loo_median_pct']:.1f}%")
    json_path, md_path = write_results("edgetpu_published", record, markdown(record))
    print(f"-> {json_path}, {md_path}")


if __name__ == "__main__":
    main()
