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
  tdbnas latency fit --space tdb --profile edgetpu --samples 2000 --cross-terms --out tpu.json
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
Samples random members of the space, obtains each one's end-to-end latency from --profile,
holds out a share, fits latency = bias + features . weights (MobileDets / TuNAS: per-slot
one-hot choices; with --cross-terms also op x input-width x output-width products per layer)
and reports the held-out error. The model JSON names its space and refuses any other.

Where the latencies come from:
  edgetpu, dsp   the modelled profiles' detector predictions (MODELLED, not measured)
  cpu, cpu-t4..  full int8 detectors built and timed on this machine (needs the export extra;
                 each timing is kept in the table, so an interrupted run resumes)

examples:
  tdbnas latency fit --space tdb --profile edgetpu --samples 2000 --out tpu-tdb.json
  tdbnas latency fit --space tdb --profile dsp --samples 4000 --cross-terms --ridge 0.01 --out dsp-tdb.json
  tdbnas latency fit --space my_space.yaml --profile cpu --samples 300 --holdout 0.25 --out cpu.json
"""


def add_fit(commands: argparse._SubParsersAction) -> None:
    fit = commands.add_parser("fit", help="learn a linear cost model of end-to-end latency over a space",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FIT_EPILOG)
    fit.add_argument("--space", required=True, metavar="NAME|FILE", help="a registered space or a description file")
    fit.add_argument("--profile", required=True, metavar="NAME",
                     help="where end-to-end latencies come from: edgetpu, dsp (modelled), cpu (timed here)")
    fit.add_argument("--samples", type=positive_int, default=1000, metavar="N",
                     help="random architectures to time (default 1000)")
    fit.add_argument("--holdout", type=_fraction, default=0.2, metavar="F",
                     help="share held out for the error report (default 0.2)")
    fit.add_argument("--cross-terms", action="store_true", help="add op x in-width x out-width features per layer")
    fit.add_argument("--ridge", type=_non_negative, default=0.0, metavar="L", help="ridge penalty (default 0)")
    fit.add_argument("--seed", type=int, default=0, help="sampling and split seed (default 0)")
    fit.add_argument("--out", required=True, metavar="PATH", help="model JSON to write")
    add_table_option(fit)
    fit.add_argument("--resolution", type=resolution, default=(320, 320), metavar="N|HxW")
    fit.add_argument("--num-classes", type=positive_int, default=90, metavar="N")
    fit.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M")
    fit.add_argument("--threads", type=positive_int, default=1, metavar="N", help="for timing on this CPU")
    fit.add_argument("--no-progress", action="store_true")
    fit.add_argument("--json", action="store_true", help="print a JSON summary")
    fit.set_defaults(handler=run_fit)


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
    from tdbnas.cli.spaces import load_space
    from tdbnas.latency import cost_model
    from tdbnas.spaces import SSDLiteHead

    space = load_space(args.space)
    head = SSDLiteHead(num_classes=args.num_classes)
    with _open(args) as lut:
        kind, measure_many = _end_to_end_source(lut, args, head)
        config = {"space": space.name, "profile": args.profile, "kind": kind, "samples": args.samples,
                  "holdout": args.holdout, "cross_terms": args.cross_terms, "ridge": args.ridge, "seed": args.seed,
                  "resolution": list(args.resolution), "num_classes": args.num_classes,
                  "width_multiplier": args.width_multiplier, "table": str(lut.path)}
        result = cost_model.fit(space, args.samples, measure_many=measure_many, holdout=args.holdout,
                                cross_terms=args.cross_terms, ridge=args.ridge, seed=args.seed, metadata=config)
    path = result.model.save(args.out)
    source = "MODELLED, not measured" if kind == "modelled" else "measured"
    if args.json:
        print(json.dumps({**config, "out": str(path), "features": len(result.model.layout),
                          "train_error": result.train.to_json(), "holdout_error": result.holdout.to_json()}, indent=2))
        return 0
    print(f"cost model for space {space.name!r} from profile {args.profile!r} ({source} end-to-end latencies)")
    print(f"  {result.train.n} architectures fitted, {result.holdout.n} held out; {len(result.model.layout)} features "
          f"({'with' if result.model.cross_terms else 'no'} cross terms), ridge {args.ridge:g}")
    print(f"  held-out error: {result.holdout.summary()}")
    print(f"  training error: {result.train.summary()}")
    print(f"wrote {path}")
    return 0


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
