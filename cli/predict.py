"""`tdbnas predict`: predicted latency of detectors on device profiles, with the per-unit breakdown."""

from __future__ import annotations

import argparse
import json

from tdbnas.cli.common import positive_float, positive_int, resolution, table

EPILOG = """\
The prediction is a * (sum of the table entries of the detector's units) + b, where a and b
are the profile's calibration (fitted on end-to-end measurements; see `tdbnas latency
calibrate`). Built-in profiles fill their gaps on first use: `cpu` measures the missing
units on this machine (use --no-profile to get an error listing them instead), `edgetpu` and
`dsp` evaluate their analytic model and are labelled "modelled".

examples:
  tdbnas predict --arch mobiledet-edgetpu --profile cpu              breakdown per unit and total
  tdbnas predict --arch mobiledet-edgetpu --arch mobiledet-dsp --profile cpu --profile edgetpu
  tdbnas predict --arch 'conv_k3_s2_c32/ds_k3_c16/...' --resolution 160 --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="predicted latency of detectors on device profiles",
                            description="Predict end-to-end detector latency from a latency table.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", required=True, metavar="NAME|STRING",
                        help="registered name, architecture string or JSON file (repeatable)")
    parser.add_argument("--profile", action="append", metavar="NAME",
                        help="device profile, e.g. cpu, edgetpu, dsp or your own (repeatable; default cpu)")
    parser.add_argument("--resolution", type=resolution, default=(320, 320), metavar="N|HxW",
                        help="input size (default 320)")
    parser.add_argument("--num-classes", type=positive_int, default=90, metavar="N", help="classes (default 90)")
    parser.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M")
    parser.add_argument("--table", metavar="PATH", help="latency table (default ~/.cache/tdbnas/latency.sqlite)")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N",
                        help="for first-use profiling of cpu (default 1)")
    parser.add_argument("--no-profile", action="store_true",
                        help="never measure: report missing units with the command that profiles them")
    parser.add_argument("--breakdown", action="store_true", help="per-unit tables even for several predictions")
    parser.add_argument("--json", action="store_true", help="print JSON records (with per-unit breakdowns)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tdbnas.cli.profile import open_table
    from tdbnas.latency import profiles
    from tdbnas.latency.predictor import LatencyPredictor
    from tdbnas.spaces import ARCHS, SSDLiteHead, resolve_arch

    archs = [resolve_arch(text) for text in args.arch]
    names = [text if text in ARCHS else None for text in args.arch]
    head = SSDLiteHead(num_classes=args.num_classes)
    predictions = []
    with open_table(args.table) as lut:
        for profile in args.profile or ["cpu"]:
            if args.no_profile:
                predictor = LatencyPredictor(lut, profile)
            else:
                predictor = profiles.get_predictor(profile, args.resolution, archs=archs, table=lut, head=head,
                                                   width_multiplier=args.width_multiplier, threads=args.threads)
            for arch, name in zip(archs, names):
                predictions.append((name, predictor.predict(arch, args.resolution, head=head,
                                                            width_multiplier=args.width_multiplier), predictor))
    if args.json:
        records = [{"name": name, **p.to_json()} for name, p, _ in predictions]
        print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
        return 0
    if len(predictions) == 1 or args.breakdown:
        for name, prediction, predictor in predictions:
            _print_breakdown(name, prediction, predictor)
    if len(predictions) > 1:
        _print_summary(predictions)
    return 0


def arch_label(text: str, width: int = 40) -> str:
    """A registered name for a reference architecture's string, else the string, shortened."""
    from tdbnas.spaces import ARCHS

    for name in ARCHS.names():
        if ARCHS.get(name).arch.encode() == text:
            return name
    return text if len(text) <= width else text[:width - 3] + "..."


def _label(prediction) -> str:
    if prediction.kind != "modelled":
        return prediction.kind
    from tdbnas.latency.modelled import MODELLED_PROFILES

    loo = MODELLED_PROFILES.get(prediction.profile, {}).get("leave_one_out_median_error_pct")
    held_out = f"; leave-one-out median error {loo:.1f}% on published models" if loo is not None else \
        "; no held-out error exists for its fit"
    return f"MODELLED, not measured{held_out}"


def _print_breakdown(name, prediction, predictor) -> None:
    hw = prediction.resolution
    print(f"{name or 'architecture'} on profile {prediction.profile!r} ({_label(prediction)}; "
          f"runtime {prediction.runtime_version}), input {hw[0]}x{hw[1]}")
    print(f"arch: {prediction.arch}\n")
    raw = prediction.raw_sum_ms or 1.0
    rows = [[i, key, f"{ms:.3f}", f"{100 * ms / raw:.1f}"] for i, (key, ms) in enumerate(prediction.per_unit)]
    print(table(["#", "unit", "ms", "%"], rows, right=("#", "ms", "%")))
    print(f"\nsum of {len(prediction.per_unit)} units: {prediction.raw_sum_ms:.3f} ms")
    whole, sum_text = prediction.whole_model_ms, "sum"
    if whole:  # parameter streaming / CPU fallback of a modelled accelerator: a whole-model effect
        print(f"whole-model term:  {whole:.3f} ms (parameters streamed past the on-chip cache, CPU fallback)")
        sum_text = "(sum + whole)"
    if prediction.calibration is None:
        how = " --measured ARCH=MS ..." if prediction.kind == "modelled" else ""
        print(f"total:             {prediction.total_ms:.3f} ms ({prediction.kind}; uncalibrated — fit one with "
              f"`tdbnas latency calibrate --profile {prediction.profile}{how}`)\n")
    else:
        a, b = prediction.calibration
        points = len(predictor.calibration.points) if predictor.calibration else 0
        fitted = f"fitted on {points} detectors" if points else "from the profile"
        print(f"total:             {prediction.total_ms:.3f} ms = {a:.4f} * {sum_text} + {b:.3f} "
              f"({prediction.kind}; calibration {fitted})\n")


def _print_summary(predictions) -> None:
    rows = []
    for name, p, _ in predictions:
        label = name or arch_label(p.arch, 48)
        rows.append([label, p.profile, p.kind, len(p.per_unit), f"{p.raw_sum_ms:.2f}", f"{p.total_ms:.2f}",
                     "yes" if p.calibration else "no"])
    print(table(["arch", "profile", "kind", "units", "sum(ms)", "predicted(ms)", "calibrated"], rows,
                right=("units", "sum(ms)", "predicted(ms)")))
