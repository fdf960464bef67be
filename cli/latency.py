"""`tdbnas latency show | export | import | calibrate | fit | validate`: inspect and move latency tables;
learn a cost model of end-to-end latency.

Each subcommand is one `add_*(commands)` function in `SUBCOMMANDS`; another subcommand is
added by appending its own `add_*` function there.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from tdbnas.cli.common import positive_float, positive_int, resolution, table

EPILOG = """\
examples:
  tdbnas latency show                                      profiles, entry counts, calibrations
  tdbnas latency show --profile cpu                        every entry of one profile
  tdbnas latency export lut.json                           everything (profiles, calibrations, samples)
  tdbnas latency export cpu.csv --profile cpu              one entry per row
  tdbnas latency import lut.json                           merge (existing entries win; --replace: theirs)
  tdbnas latency calibrate --profile cpu                   time reference detectors here, fit a*sum+b
  tdbnas latency calibrate --profile pixel4 --measured mobiledet-edgetpu=11.2 --measured mobiledet-dsp=20.5
  tdbnas latency fit --space fbnet --data phone.csv --out phone.json   (arch|genome|choices, ms)
  tdbnas latency validate --space tdb --count 50 --plot validate.png   predicted vs measured here
"""


VALIDATE_EPILOG = """Times N random members of the space (plus any --arch) end to end as full int8 detectors on this
machine and compares them with the profile's calibrated predictions (their units are profiled
first if missing). Reports the share within +-10 %, median error and rank correlation, and
writes a scatter plot. Timings are kept in the table, so a rerun only times what is new.

examples:
  tdbnas latency validate --space tdb --count 50 --plot validate.png --json-out validate.json
  tdbnas latency validate --arch mobiledet-edgetpu --arch mobiledet-dsp --resolution 160
"""


def add_validate(commands: argparse._SubParsersAction) -> None:
    val = commands.add_parser("validate", help="predicted vs measured latency of random detectors, with a plot",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=VALIDATE_EPILOG)
    add_table_option(val)
    val.add_argument("--profile", default="cpu", metavar="NAME", help="a local measured profile (default cpu)")
    val.add_argument("--space", metavar="NAME|FILE", default="tdb", help="space to sample from (default tdb)")
    val.add_argument("--count", type=int, default=20, metavar="N", help="random members (default 20)")
    val.add_argument("--arch", action="append", default=[], metavar="NAME|STRING", help="also this detector")
    val.add_argument("--seed", type=int, default=1000, help="sampling seed (default 1000)")
    val.add_argument("--resolution", type=resolution, default=(320, 320), metavar="N|HxW")
    val.add_argument("--num-classes", type=positive_int, default=90, metavar="N")
    val.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M")
    val.add_argument("--threads", type=positive_int, default=1, metavar="N")
    val.add_argument("--plot", metavar="PNG", help="write the scatter plot here")
    val.add_argument("--json-out", metavar="PATH", help="write every point and the summary as JSON")
    val.add_argument("--no-progress", action="store_true")
    val.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from tdbnas.cli.spaces import load_space
    from tdbnas.latency import profiles
    from tdbnas.latency.validation import scatter_plot, validate
    from tdbnas.spaces import SSDLiteHead, resolve_arch
    from tdbnas.spaces.atomic import write_json_atomic

    spec = profiles.profile_spec(args.profile)
    if spec is not None and spec.kind == "modelled":
        raise ValueError(f"{args.profile!r} is a modelled profile: there is no device here to validate it on")
    space = load_space(args.space)
    archs = [resolve_arch(a) for a in args.arch] + [space.sample(args.seed + i) for i in range(args.count)]
    if not archs:
        raise ValueError("nothing to validate: give --count N and/or --arch")
    head = SSDLiteHead(num_classes=args.num_classes)
    with _open(args) as lut, profiles.make_runner("local", threads=args.threads) as runner:
        result = validate(archs, args.resolution, table=lut, profile=args.profile, runner=runner,
                          cache_dir=profiles.micromodel_cache(), head=head, width_multiplier=args.width_multiplier,
                          progress=not args.no_progress)
    summary = result.summary()
    print(f"profile {args.profile!r}, {summary['n']} detectors at {args.resolution[0]}x{args.resolution[1]}: "
          f"{100 * summary['within_10']:.0f}% within +-10%, median error {100 * summary['median_abs_error']:.1f}%, "
          f"max {100 * summary['max_abs_error']:.1f}%, Spearman {summary.get('spearman', float('nan')):.3f}")
    if args.plot:
        print(f"plot -> {scatter_plot(result.points, args.plot, title=f'{args.profile}: predicted vs measured')}")
    if args.json_out:
        print(f"points -> {write_json_atomic(args.json_out, result.to_json())}")
    return 0


def add_table_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", metavar="PATH", help="latency table (default ~/.cache/tdbnas/latency.sqlite)")


def add_show(commands: argparse._SubParsersAction) -> None:
    show = commands.add_parser("show", help="profiles of a table, or one profile's entries",
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog="examples:\n  tdbnas latency show\n  tdbnas latency show --profile cpu --json")
    add_table_option(show)
    show.add_argument("--profile", metavar="NAME", help="list this profile's entries")
    show.add_argument("--runtime-version", metavar="V", help="with --profile: this runtime (default: latest)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)


def add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="write a table (or some profiles) as JSON or CSV",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="JSON keeps everything; CSV keeps entries (calibrations are JSON-only).\n\n"
                                        "examples:\n  tdbnas latency export lut.json\n"
                                        "  tdbnas latency export cpu.csv --profile cpu")
    export.add_argument("path", metavar="PATH", help="output file, .json or .csv (written atomically)")
    add_table_option(export)
    export.add_argument("--profile", action="append", metavar="NAME", help="only these profiles (repeatable)")
    export.set_defaults(handler=run_export)


def add_import(commands: argparse._SubParsersAction) -> None:
    imp = commands.add_parser("import", help="merge a JSON or CSV export into a table",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="The file is validated completely before anything is written.\n\n"
                                     "examples:\n  tdbnas latency import lut.json\n"
                                     "  tdbnas latency import phone.csv --replace --table team.sqlite")
    imp.add_argument("path", metavar="PATH", help="a .json or .csv file written by `tdbnas latency export`")
    add_table_option(imp)
    imp.add_argument("--replace", action="store_true", help="entries in the file replace existing ones")
    imp.set_defaults(handler=run_import)


def add_calibrate(commands: argparse._SubParsersAction) -> None:
    cal = commands.add_parser(
        "calibrate", help="fit a profile's a*sum+b on end-to-end detector latencies",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Without --measured, times full int8 detectors on this machine (profile must be a local\n"
               "measured one, e.g. cpu). With --measured ARCH=MS, uses latencies you measured elsewhere.\n\n"
               "examples:\n  tdbnas latency calibrate --profile cpu --space tdb --count 3\n"
               "  tdbnas latency calibrate --profile pixel4 --measured mobiledet-edgetpu=11.2 "
               "--measured mobiledet-dsp=20.5")
    add_table_option(cal)
    cal.add_argument("--profile", default="cpu", metavar="NAME", help="profile to calibrate (default cpu)")
    cal.add_argument("--arch", action="append", default=[], metavar="NAME|STRING", help="detector to time")
    cal.add_argument("--space", metavar="NAME|FILE", default="tdb",
                     help="references and random members of this space fill up --count (default tdb)")
    cal.add_argument("--count", type=positive_int, default=3, metavar="N", help="detectors to time (default 3)")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--measured", action="append", default=[], metavar="ARCH=MS",
                     help="an end-to-end latency measured elsewhere (repeatable)")
    cal.add_argument("--resolution", type=resolution, default=(320, 320), metavar="N|HxW")
    cal.add_argument("--num-classes", type=positive_int, default=90, metavar="N")
    cal.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M")
    cal.add_argument("--threads", type=positive_int, default=1, metavar="N")
    cal.add_argument("--no-progress", action="store_true")
    cal.set_defaults(handler=run_calibrate)


FIT_EPILOG = """\
Learns latency = bias + features . weights for a space, from end-to-end latencies of whole
networks: read from a file you measured (--data) or obtained here from --profile. The default
features are shared across slots (per op kind: count, MAdds, parameters, activations; how often
each op is chosen; per-slot deviations held back harder), with the ridge penalty chosen by
cross-validation inside the samples; --features onehot is the MobileDets/TuNAS layout.

With --data, reports the k-fold held-out Spearman, Kendall, share within +-10 % and median error
of the model, of a MAdds-only and of an op-count regression (same folds), then fits on every
sample. With --profile, holds out a share instead. Too few samples are refused, or warned about.

--data FILE: .csv with a header, or .json (a list of objects); one row per network with one of
  arch      an architecture string                    (architecture-language spaces)
  genome    choice indices in slot order, "7 8 1 ..."  (any space)
  choices   choice names in slot order, "k3_e6 skip ..." (categorical spaces, e.g. fbnet)
and the latency in column `ms` (or --target COLUMN). Repeats of a network are merged (median).

--profile NAME: edgetpu, dsp (modelled: MODELLED, not measured), or cpu (full int8 detectors
built and timed on this machine; each timing is kept in the table, so a rerun resumes).

--base FILE | profile:NAME: another fitted cost model of the same space (another device's), or a
profile's op table (profile:cpu, profile:edgetpu, a table's profile; stood in for by a model of
its predictions on 2000 random members), used as an offset (the model learns the residual) or as
one more feature.

examples:
  tdbnas latency fit --space fbnet --data phone.csv --out phone.json
  tdbnas latency fit --space fbnet --data fbnet.csv --target gold_6240 --folds 10 --out gold.json
  tdbnas latency fit --space tdb --data npu.json --resolution 320 --base tpu-tdb.json --out npu.json
  tdbnas latency fit --space tdb --data coral.csv --base profile:coral-usb --out coral-measured.json
  tdbnas latency fit --space tdb --profile edgetpu --samples 2000 --out tpu-tdb.json
  tdbnas latency fit --space tdb --profile dsp --samples 4000 --features onehot --cross-terms --out dsp.json
"""


def add_fit(commands: argparse._SubParsersAction) -> None:
    fit = commands.add_parser("fit", help="learn a cost model of end-to-end latency from measured samples",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FIT_EPILOG)
    fit.add_argument("--space", required=True, metavar="NAME|FILE",
                     help="a registered or categorical space (e.g. tdb, fbnet) or a description file")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="FILE", help="measured (architecture or genome, ms) pairs: .csv or .json")
    source.add_argument("--profile", metavar="NAME",
                        help="obtain latencies from a profile: edgetpu, dsp (modelled), cpu (timed here)")
    fit.add_argument("--target", default="ms", metavar="COLUMN", help="latency column of --data (default ms)")
    fit.add_argument("--samples", type=positive_int, default=1000, metavar="N",
                     help="--profile: random architectures to time (default 1000)")
    fit.add_argument("--holdout", type=_fraction, default=0.2, metavar="F",
                     help="--profile: share held out for the error report (default 0.2)")
    fit.add_argument("--folds", type=_folds, default=5, metavar="K", help="--data: k-fold report (default 5)")
    fit.add_argument("--features", choices=("shared", "onehot"), default="shared",
                     help="shared physics features (default) or the one-hot TuNAS layout")
    fit.add_argument("--cross-terms", action="store_true",
                     help="--features onehot: add op x in-width x out-width features per layer")
    fit.add_argument("--ridge", type=_ridge, default=None, metavar="cv|L",
                     help="ridge penalty per sample on standardised features (default cv: chosen by "
                          "cross-validation inside the samples)")
    fit.add_argument("--base", metavar="MODEL|profile:NAME",
                     help="a fitted cost model of the same space, or a profile's op table, to build on")
    fit.add_argument("--base-mode", choices=("offset", "feature"), default="offset",
                     help="the base as an offset (default) or as a feature")
    fit.add_argument("--seed", type=int, default=0, help="sampling, split and fold seed (default 0)")
    fit.add_argument("--out", required=True, metavar="PATH", help="model JSON to write")
    add_table_option(fit)
    fit.add_argument("--resolution", type=resolution, default=(320, 320), metavar="N|HxW",
                     help="input size of the detectors the latencies are of (architecture-language spaces)")
    fit.add_argument("--num-classes", type=positive_int, default=90, metavar="N")
    fit.add_argument("--head", metavar="FILE",
                     help="SSDLite head settings (YAML/JSON: SSDLiteHead fields, or a run config's `head` section)")
    fit.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M")
    fit.add_argument("--threads", type=positive_int, default=1, metavar="N", help="for timing on this CPU")
    fit.add_argument("--no-progress", action="store_true")
    fit.add_argument("--json", action="store_true", help="print a JSON summary")
    fit.set_defaults(handler=run_fit)


def _ridge(text: str) -> float | None:
    if text.strip().lower() == "cv":
        return None
    return _non_negative(text)


def _folds(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"k-fold cross-validation needs at least 2 folds, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


#: Subcommand builders, in `--help` order. Append to add one.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_show, add_export, add_import, add_calibrate,
                                                                    add_fit, add_validate]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("latency", help="show, export, import, calibrate latency tables; fit cost models",
                            description="Latency tables: inspect profiles, move them between machines, "
                                        "calibrate them against end-to-end measurements; fit learned cost models.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="latency_command", metavar="SUBCOMMAND")
    commands.required = True
    for add in SUBCOMMANDS:
        add(commands)


def _open(args: argparse.Namespace):
    from tdbnas.cli.profile import open_table

    return open_table(args.table)


def run_show(args: argparse.Namespace) -> int:
    from tdbnas.latency.profiling import is_detector_key

    with _open(args) as lut:
        if args.profile:
            return _show_profile(lut, args)
        records = []
        for prof in lut.profiles():
            versions = lut.runtime_versions(prof.name)
            entries = list(lut.entries(prof.name))
            detectors = sum(is_detector_key(e.key) for e in entries)
            cal = prof.calibration
            records.append({"name": prof.name, "kind": prof.kind, "runner": prof.runner, "runtime_versions": versions,
                            "entries": len(entries) - detectors, "detector_measurements": detectors,
                            "calibration": None if cal is None else {"a": cal.a, "b": cal.b, "points": len(cal.points),
                                                                     "runtime_version": cal.runtime_version},
                            "created": prof.created, "environment": prof.environment})
        if args.json:
            print(json.dumps({"table": str(lut.path), "profiles": records}, indent=2))
            return 0
        print(f"latency table {lut.path}\n")
        if not records:
            print("no profiles yet: `tdbnas profile --space tdb --device cpu` measures one")
            return 0
        rows = [[r["name"], r["kind"], r["runner"], ", ".join(r["runtime_versions"]) or "-", r["entries"],
                 r["detector_measurements"],
                 "-" if r["calibration"] is None else
                 f"{r['calibration']['a']:.3f}*sum+{r['calibration']['b']:.2f} ({r['calibration']['points']} pts)",
                 r["created"][:19].replace("T", " ")] for r in records]
        print(table(["profile", "kind", "runner", "runtime", "entries", "detectors", "calibration", "created"], rows,
                    right=("entries", "detectors")))
    return 0


def _show_profile(lut, args: argparse.Namespace) -> int:
    prof = lut.profile(args.profile)
    version = lut.resolve_runtime_version(args.profile, args.runtime_version)
    entries = list(lut.entries(args.profile, version))
    if args.json:
        print(json.dumps({"profile": prof.name, "kind": prof.kind, "runtime_version": version,
                          "entries": [{"key": e.key, "value_ms": e.value_ms, "statistic": e.statistic,
                                       "spread": e.spread, "samples": len(e.samples), "measured_at": e.measured_at}
                                      for e in entries]}, indent=2))
        return 0
    print(f"profile {prof.name!r} ({prof.kind}), runtime {version}, {len(entries)} entries in {lut.path}\n")
    rows = [[e.key, f"{e.value_ms:.4f}", e.statistic, "-" if e.spread is None else f"{e.spread:.4f}", len(e.samples),
             e.measured_at] for e in entries]
    print(table(["key", "ms", "statistic", "spread", "samples", "measured"], rows, right=("ms", "spread", "samples")))
    return 0


def run_export(args: argparse.Namespace) -> int:
    suffix = args.path.lower().rsplit(".", 1)[-1]
    if suffix not in ("json", "csv"):
        raise ValueError(f"export to a .json or .csv file, not {args.path!r}")
    with _open(args) as lut:
        count = (lut.export_json if suffix == "json" else lut.export_csv)(args.path, args.profile)
        print(f"wrote {count} entries from {lut.path} to {args.path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    with _open(args) as lut:
        count = lut.import_file(args.path, replace=args.replace)
        print(f"imported {count} entries from {args.path} into {lut.path}")
    return 0


def _parse_measured(items: list[str], resolve) -> list[tuple[object, float]]:
    pairs = []
    for item in items:
        arch_text, sep, ms = item.rpartition("=")
        try:
            value = float(ms)
        except ValueError:
            value = -1.0
        if not sep or not arch_text or not value > 0:
            raise ValueError(f"--measured takes ARCH=MS with a positive number of milliseconds, got {item!r}")
        pairs.append((resolve(arch_text), value))
    return pairs


def run_calibrate(args: argparse.Namespace) -> int:
    from tdbnas.cli.predict import arch_label
    from tdbnas.latency.predictor import calibrate
    from tdbnas.spaces import SSDLiteHead, resolve_arch

    head = SSDLiteHead(num_classes=args.num_classes)
    with _open(args) as lut:
        if args.measured:
            if args.arch:
                raise ValueError("give either --measured ARCH=MS (latencies from elsewhere) or --arch (time here)")
            pairs = _parse_measured(args.measured, resolve_arch)
            calibration = calibrate(lut, args.profile, [(a, args.resolution, ms) for a, ms in pairs], head=head,
                                    width_multiplier=args.width_multiplier, note="--measured")
        else:
            calibration = _calibrate_here(lut, args, head)
        print(f"profile {args.profile!r}: predicted = {calibration.a:.4f} * sum + {calibration.b:.3f} ms "
              f"(runtime {calibration.runtime_version}, {len(calibration.points)} detectors)")
        rows = [[arch_label(p.arch), f"{p.raw_sum_ms:.2f}", f"{p.measured_ms:.2f}",
                 f"{calibration.apply(p.raw_sum_ms):.2f}"] for p in calibration.points]
        print(table(["arch", "sum(ms)", "measured(ms)", "fitted(ms)"], rows,
                    right=("sum(ms)", "measured(ms)", "fitted(ms)")))
    return 0


def _calibrate_here(lut, args: argparse.Namespace, head):
    from tdbnas.cli.profile import calibration_archs
    from tdbnas.cli.spaces import load_space
    from tdbnas.latency import profiles
    from tdbnas.latency.predictor import calibrate
    from tdbnas.latency.profiling import measure_detectors, profile_units, runtime_version_of
    from tdbnas.spaces import resolve_arch

    spec = profiles.profile_spec(args.profile)
    if spec is not None and spec.kind == "modelled":
        raise ValueError(f"{args.profile!r} is a modelled profile: there is no device here to time detectors on; "
                         "give latencies measured on the device with --measured ARCH=MS")
    if lut.has_profile(args.profile) and lut.profile(args.profile).runner != "local":
        raise ValueError(f"profile {args.profile!r} was measured with the {lut.profile(args.profile).runner} runner; "
                         "time detectors on that device and pass them with --measured ARCH=MS")
    archs = calibration_archs(args.count, load_space(args.space) if args.space else None,
                              [resolve_arch(a) for a in args.arch], args.seed)
    units = profiles.units_for(args.resolution, archs=archs, head=head, width_multiplier=args.width_multiplier)
    cache = profiles.micromodel_cache()
    with profiles.make_runner("local", threads=args.threads) as runner:
        version = runtime_version_of(runner.environment())
        device = spec.device if spec else "cpu"
        profile_units(units, table=lut, profile=args.profile, runner=runner, cache_dir=cache,
                      progress=not args.no_progress, device=device)
        measured = measure_detectors(archs, args.resolution, table=lut, profile=args.profile, runner=runner,
                                     cache_dir=cache, head=head, width_multiplier=args.width_multiplier,
                                     progress=not args.no_progress, device=device)
    return calibrate(lut, args.profile, [(m.arch, m.resolution, m.value_ms) for m in measured],
                     runtime_version=version, head=head, width_multiplier=args.width_multiplier)


# ---- fit ------------------------------------------------------------------------------------
def run_fit(args: argparse.Namespace) -> int:
    import warnings

    from tdbnas.latency import cost_model
    from tdbnas.latency.features import head_to_json
    from tdbnas.spaces import SSDLiteHead, resolve_genome_space

    space = resolve_genome_space(args.space)
    head = _head(args.head, args.num_classes) if args.head else SSDLiteHead(num_classes=args.num_classes)
    if args.cross_terms and args.features != "onehot":
        raise ValueError("--cross-terms belongs to --features onehot")
    base = None
    if args.base:
        base = _profile_base(args, space, head) if args.base.startswith("profile:") else \
            cost_model.CostModel.load(args.base, space)
    options = {"features": args.features, "cross_terms": args.cross_terms, "ridge": args.ridge, "base": base,
               "base_mode": args.base_mode, "resolution": args.resolution, "head": head,
               "width_multiplier": args.width_multiplier}
    config = {"space": space.name, "features": args.features, "cross_terms": args.cross_terms,
              "ridge": "cv" if args.ridge is None else args.ridge, "seed": args.seed,
              "resolution": list(args.resolution), "num_classes": args.num_classes,
              "width_multiplier": args.width_multiplier, "head": head_to_json(head), "base": args.base,
              "base_mode": args.base_mode if args.base else None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", cost_model.CostModelWarning)
        if args.data:
            summary = _fit_from_file(args, space, options, config)
        else:
            summary = _fit_from_profile(args, space, options, config)
    notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, cost_model.CostModelWarning)))
    path = summary["model"].save(args.out)
    if args.json:
        print(json.dumps({**config, "out": str(path), "features": len(summary["model"].layout),
                          "feature_set": args.features, "warnings": notes,
                          **{k: v for k, v in summary.items() if k != "model"}}, indent=2))
        return 0
    for line in summary["lines"]:
        print(line)
    for note in notes:
        print(f"warning: {note}")
    print(f"wrote {path}")
    return 0


#: Random members a profile's predictions are sampled on to stand in for its op table as a base.
BASE_SAMPLES = 2000


def _profile_base(args: argparse.Namespace, space, head):
    """`--base profile:NAME`: a shared cost model of the profile's own predictions (its op table,
    or the modelled one) on BASE_SAMPLES random members, so the base can price any genome."""
    from tdbnas.latency import cost_model, profiles
    from tdbnas.spaces import SearchSpace

    name = args.base[len("profile:"):]
    if not isinstance(space, SearchSpace):
        raise ValueError(f"--base {args.base}: space {space.name!r} is categorical; no profile prices its members")
    genomes = cost_model.sample_genomes(space, min(BASE_SAMPLES, space.size()), seed=args.seed)
    archs = [space.decode(tuple(int(g) for g in row)) for row in genomes]
    with _open(args) as lut:
        predictor = profiles.get_predictor(name, args.resolution, archs=archs, table=lut, head=head,
                                           width_multiplier=args.width_multiplier, threads=args.threads,
                                           progress=not args.no_progress)
        ms = predictor.predict_many(archs, args.resolution, head=head, width_multiplier=args.width_multiplier)
    return cost_model.fit_cost_model(space, genomes, ms, resolution=args.resolution, head=head,
                                     width_multiplier=args.width_multiplier, seed=args.seed,
                                     metadata={"profile": name, "kind": predictor.kind, "samples": len(ms),
                                               "base_of": "latency fit --base"})


def _head(path: str, num_classes: int):
    """An SSDLite head from a settings file: its fields, or a config with a `head` section."""
    from tdbnas.spaces.head import head_from_settings
    from tdbnas.spaces.space import read_description

    settings = read_description(path)
    if isinstance(settings, dict) and isinstance(settings.get("head"), dict):
        settings = settings["head"]
    try:
        return head_from_settings(settings, num_classes)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _fit_from_file(args: argparse.Namespace, space, options: dict, config: dict) -> dict:
    from tdbnas.latency import cost_model
    from tdbnas.latency.fit_data import read_latencies

    data, repeats = read_latencies(args.data, space, target=args.target)
    config.update(data=str(args.data), target=args.target, folds=args.folds, samples=len(data))
    reports = cost_model.cross_validate(space, data.genomes, data.latency_ms, folds=args.folds, seed=args.seed,
                                        **options)
    cv = {name: report.to_json() for name, report in reports.items()}
    model = cost_model.fit_cost_model(space, data.genomes, data.latency_ms, folds=args.folds, seed=args.seed,
                                      metadata={**config, "kind": "measured", "cv_error": cv}, **options)
    rows = [[name, f"{r.spearman:.3f}", f"{r.kendall:.3f}", f"{100 * r.within_10_pct:.1f}%",
             f"{r.median_ape_pct:.2f}%"] for name, r in reports.items()]
    merged = f" ({repeats} repeated rows merged into medians)" if repeats else ""
    lines = [f"cost model for space {space.name!r} from {args.data}: {len(data)} networks{merged}, "
             f"{len(model.layout)} {args.features} features, ridge {_ridge_text(model)}",
             f"{args.folds}-fold held-out error (each fold chooses its own penalty; baselines on the same folds):",
             table(["model", "Spearman", "Kendall", "within 10%", "median |error|"], rows,
                   right=("Spearman", "Kendall", "within 10%", "median |error|"))]
    return {"model": model, "lines": lines, "cv_error": cv, "repeats_merged": repeats}


def _ridge_text(model) -> str:
    chosen = f"{model.ridge:.3g}"
    if model.metadata.get("ridge_selection") == "cv":
        ratio = model.metadata.get("deviation_ratio")
        held = "deviations left out" if ratio is None and model.features == "shared" else \
            f"deviations x{ratio:g}" if ratio is not None else ""
        return f"{chosen} (chosen by cross-validation{', ' + held if held else ''})"
    return chosen


def _fit_from_profile(args: argparse.Namespace, space, options: dict, config: dict) -> dict:
    from tdbnas.latency import cost_model
    from tdbnas.spaces import SearchSpace

    if not isinstance(space, SearchSpace):
        raise ValueError(f"space {space.name!r} is categorical: no profile can time its members; give --data")
    if options["base"] is not None:
        raise ValueError("--base needs measured --data (a profile's latencies are what a base model would predict)")
    with _open(args) as lut:
        kind, measure_many = _end_to_end_source(lut, args, options["head"])
        config.update(profile=args.profile, kind=kind, samples=args.samples, holdout=args.holdout,
                      table=str(lut.path))
        result = cost_model.fit(space, args.samples, measure_many=measure_many, holdout=args.holdout,
                                features=args.features, cross_terms=args.cross_terms, ridge=args.ridge,
                                seed=args.seed, resolution=args.resolution, head=options["head"],
                                width_multiplier=args.width_multiplier, metadata=config)
    source = "MODELLED, not measured" if kind == "modelled" else "measured"
    model = result.model
    features = f"{len(model.layout)} features" + (f" ({'with' if model.cross_terms else 'no'} cross terms)"
                                                  if args.features == "onehot" else f" ({args.features})")
    lines = [f"cost model for space {space.name!r} from profile {args.profile!r} ({source} end-to-end latencies)",
             f"  {result.train.n} architectures fitted, {result.holdout.n} held out; {features}, ridge "
             f"{_ridge_text(model)}",
             f"  held-out error: {result.holdout.summary()}",
             f"  training error: {result.train.summary()}"]
    return {"model": model, "lines": lines, "train_error": result.train.to_json(),
            "holdout_error": result.holdout.to_json(), "kind": kind}


def _end_to_end_source(lut, args: argparse.Namespace, head):
    """("modelled" | "measured", archs -> end-to-end ms) for --profile."""
    from tdbnas.latency import profiles

    spec = profiles.profile_spec(args.profile)
    stored = lut.profile(args.profile) if lut.has_profile(args.profile) else None
    if spec is not None and spec.kind == "modelled":
        def modelled(archs):
            predictor = profiles.get_predictor(args.profile, args.resolution, archs=archs, table=lut, head=head,
                                               width_multiplier=args.width_multiplier)
            return predictor.predict_many(archs, args.resolution, head=head, width_multiplier=args.width_multiplier)
        return "modelled", modelled
    local = (spec is not None) or (stored is not None and stored.kind == "measured" and stored.runner == "local")
    if not local:
        if stored is None:
            known = ", ".join(sorted(set(profiles.PROFILES) | {p.name for p in lut.profiles()}))
            raise ValueError(f"unknown profile {args.profile!r} (built-in or in {lut.path}: {known})")
        raise ValueError(f"profile {args.profile!r} is {stored.kind} with the {stored.runner} runner: `latency fit` "
                         "times detectors only on this machine; call tdbnas.latency.cost_model.fit with a measure "
                         "function for that device")

    def measured(archs):
        from tdbnas.latency.profiling import measure_detectors

        device = spec.device if spec is not None else str(stored.environment.get("device", "cpu"))
        with profiles.make_runner("local", threads=args.threads) as runner:
            results = measure_detectors(archs, args.resolution, table=lut, profile=args.profile, runner=runner,
                                        cache_dir=profiles.micromodel_cache(), head=head,
                                        width_multiplier=args.width_multiplier, progress=not args.no_progress,
                                        device=device)
        return [r.value_ms for r in results]
    return "measured", measured
