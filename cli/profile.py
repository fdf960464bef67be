"""`tdbnas profile`: measure the ops of a search space (or of some architectures) on a device
into a latency table. Resumes where a killed run stopped."""

from __future__ import annotations

import argparse
import json

from tdbnas.cli.common import positive_float, positive_int, resolution

EPILOG = """\
Every distinct unit (backbone layer at its input size and widths, SSDLite extra layer and
predictor) becomes a small int8 TFLite model, timed with the measurement protocol; each
result is committed at once, so an interrupted run resumes where it stopped (rerun the same
command). `cpu` is measured on this machine; `edgetpu` and `dsp` are modelled profiles
filled from an analytic model (no device needed; labelled "modelled" everywhere).

The default table is ~/.cache/tdbnas/latency.sqlite ($TDBNAS_CACHE moves the cache folder).
A profile holds one setting: with --threads 4 the default profile name is cpu-t4.

examples:
  tdbnas profile --space tdb --resolution 320 --device cpu           every unit of the tdb space
  tdbnas profile --arch mobiledet-edgetpu --device cpu                just one architecture's units
  tdbnas profile --space tdb --device cpu --dry-run                   how many units are missing
  tdbnas profile --space tdb --device cpu --calibrate 3               then time 3 detectors, fit a*sum+b
  tdbnas profile --space tdb --device edgetpu                         modelled Edge TPU profile
  tdbnas profile --space tdb --device cpu --runner adb --serial R58M  a phone's CPU over adb
  tdbnas profile --space tdb --device edgetpu --delegate libedgetpu.so.1
                                  a USB/PCIe Coral on this host: measured, replaces the modelled profile
  tdbnas profile --space tdb --device edgetpu --runner ssh --host mendel@coral --delegate libedgetpu.so.1
  tdbnas profile --space tdb --device dsp --runner adb --android-delegate hexagon   a phone's Hexagon DSP
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("profile", help="measure a space's ops on a device into a latency table",
                            description="Profile operators on a device to build a latency lookup table.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to profile")
    what.add_argument("--space", metavar="NAME|FILE", help="a registered space or a space description file")
    what.add_argument("--arch", action="append", default=[], metavar="NAME|STRING",
                      help="profile this architecture's units (repeatable; with or without --space)")
    what.add_argument("--resolution", type=resolution, default=(320, 320), metavar="N|HxW",
                      help="input size (default 320)")
    what.add_argument("--num-classes", type=positive_int, default=90, metavar="N", help="classes (default 90)")
    what.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M")
    where = parser.add_argument_group("where")
    where.add_argument("--device", default="cpu", choices=("cpu", "edgetpu", "dsp"),
                       help="cpu is measured; edgetpu and dsp are modelled (default cpu)")
    where.add_argument("--runner", default="local", choices=("local", "adb", "ssh"),
                       help="how to reach the device (default local: this machine)")
    where.add_argument("--threads", type=positive_int, default=1, metavar="N", help="interpreter threads (default 1)")
    where.add_argument("--serial", help="adb device serial (--runner adb)")
    where.add_argument("--host", help="user@host (--runner ssh)")
    where.add_argument("--port", type=positive_int, help="ssh port (--runner ssh)")
    where.add_argument("--delegate", metavar="LIB",
                       help="external delegate library: libedgetpu.so.1 (Edge TPU), a QNN/Hexagon or GPU delegate")
    where.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                       help="option passed to the delegate (repeatable)")
    where.add_argument("--android-delegate", choices=("gpu", "nnapi", "hexagon"),
                       help="benchmark_model's built-in delegate (--runner adb)")
    where.add_argument("--benchmark-binary", metavar="PATH",
                       help="TFLite benchmark_model for the phone's ABI (--runner adb; or $TDBNAS_BENCHMARK_MODEL)")
    where.add_argument("--no-xnnpack", action="store_true", help="plain TFLite kernels, no XNNPACK")
    store = parser.add_argument_group("table")
    store.add_argument("--table", metavar="PATH", help="latency table file (default ~/.cache/tdbnas/latency.sqlite)")
    store.add_argument("--profile", metavar="NAME",
                       help="profile name (default: the device, e.g. cpu; cpu-t4 with --threads 4; adb-cpu ...)")
    store.add_argument("--cache-dir", metavar="DIR", help="micro-model cache (default ~/.cache/tdbnas/micromodels)")
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="after profiling, time N full detectors end to end and fit the calibration")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random detectors of --calibrate")
    parser.add_argument("--dry-run", action="store_true", help="only count the units that would be measured")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(handler=run)


def open_table(path: str | None):
    from tdbnas.latency.profiles import open_table

    return open_table(path)


def _runner_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of the chosen runner, from the flags that apply to it."""
    options: dict = {}
    delegate_options = dict(_key_value(text) for text in args.delegate_option)
    if args.no_xnnpack:
        options["xnnpack"] = False
    if args.runner == "adb":
        if args.host or args.port:
            raise ValueError("--host and --port are for --runner ssh")
        options.update({k: v for k, v in {"serial": args.serial, "benchmark_binary": args.benchmark_binary}.items()
                        if v})
        if args.android_delegate:
            options[f"use_{args.android_delegate}"] = True
        if args.delegate:
            options.update(external_delegate=args.delegate, external_delegate_options=delegate_options)
        return options
    if args.serial or args.android_delegate or args.benchmark_binary:
        raise ValueError("--serial, --android-delegate and --benchmark-binary are for --runner adb")
    if args.delegate:
        options.update(delegate=args.delegate, delegate_options=delegate_options)
    if args.runner == "ssh":
        if not args.host:
            raise ValueError("--runner ssh needs --host user@host")
        options["host"] = args.host
        if args.port:
            options["port"] = args.port
    elif args.host or args.port:
        raise ValueError("--host and --port are for --runner ssh")
    return options


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--delegate-option takes KEY=VALUE, got {text!r}")
    return key, value


def _on_device(args: argparse.Namespace) -> bool:
    """Whether an accelerator device is measured for real (a delegate reaches it) rather than modelled."""
    return bool(args.delegate or args.android_delegate)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tdbnas.cli.spaces import load_space
    from tdbnas.latency import profiles
    from tdbnas.spaces import SSDLiteHead, resolve_arch

    if args.space is None and not args.arch:
        raise ValueError("say what to profile: --space NAME and/or --arch NAME|STRING")
    space = load_space(args.space) if args.space else None
    archs = [resolve_arch(text) for text in args.arch]
    head = SSDLiteHead(num_classes=args.num_classes)
    units = profiles.units_for(args.resolution, space=space, archs=archs, head=head,
                               width_multiplier=args.width_multiplier)
    table = open_table(args.table)
    modelled = args.device in profiles.modelled_devices() and not _on_device(args)
    if args.device in profiles.modelled_devices() and not modelled:
        # A real accelerator: its measured profile replaces the modelled one in predictions.
        name = args.profile or profiles.measured_name(args.device)
    else:
        name = args.profile or (profiles.default_profile_name(args.device, args.threads) if args.runner == "local"
                                else f"{args.runner}-{profiles.default_profile_name(args.device, args.threads)}")
    with table:
        if modelled:
            return _modelled(args, table, name, units)
        from tdbnas.latency.profiling import profile_units, runtime_version_of

        with profiles.make_runner(args.runner, threads=args.threads, **_runner_options(args)) as runner:
            version = runtime_version_of(runner.environment())
            missing = table.missing(name, (u.key for u in units), version)
            print(f"{len(units)} units at {args.resolution[0]}x{args.resolution[1]}; {len(units) - len(missing)} "
                  f"already in profile {name!r} ({version}) of {table.path}; {len(missing)} to measure")
            if args.dry_run:
                return 0
            cache = Path(args.cache_dir) if args.cache_dir else profiles.micromodel_cache()
            report = profile_units(units, table=table, profile=name, runner=runner, cache_dir=cache,
                                   progress=not args.no_progress, device=args.device, builder=_builder(args))
            print(report.summary())
            calibration = None
            if args.calibrate:
                calibration = _calibrate(args, table, name, runner, version, space, archs, head, cache)
        if args.json:
            print(json.dumps({"profile": name, "kind": "measured", "table": str(table.path),
                              "runtime_version": version, "units": report.requested, "already": report.already,
                              "measured": report.measured, "seconds": report.seconds,
                              "calibration": None if calibration is None else calibration.to_json()}, indent=2))
    return 0


def _modelled(args: argparse.Namespace, table, name: str, units) -> int:
    from tdbnas.latency import profiles

    if args.dry_run:
        version = profiles.modelled_runtime_version(args.device)
        missing = table.missing(name, (u.key for u in units), version)
        print(f"{len(units)} units; {len(missing)} missing from modelled profile {name!r}")
        return 0
    written = profiles.fill_modelled(table, args.device, units, profile=name)
    print(f"modelled profile {name!r}: {len(units)} units, {written} new entries from the analytic model "
          f"({profiles.modelled_runtime_version(args.device)}) in {table.path}")
    if args.calibrate:
        print("(--calibrate ignored: a modelled profile has no device to time detectors on)")
    if args.json:
        print(json.dumps({"profile": name, "kind": "modelled", "table": str(table.path), "units": len(units),
                          "written": written}, indent=2))
    return 0


def _builder(args: argparse.Namespace, detector: bool = False):
    """The micro-model builder: the default one (None), except on a real Edge TPU, which runs
    only models compiled by edgetpu_compiler."""
    if not (args.device == "edgetpu" and _on_device(args)):
        return None
    import functools

    from tdbnas.export.edgetpu import INSTALL_HINT, compiler_available
    from tdbnas.latency import micromodels

    if not compiler_available():  # say so before building anything
        raise RuntimeError(f"measuring on an Edge TPU needs every micro-model compiled: {INSTALL_HINT}")
    build = micromodels.build_detector_tflite if detector else micromodels.build_micromodels
    return functools.partial(build, compile_edgetpu=True)


def calibration_archs(count: int, space, archs, seed: int):
    """The given architectures, then the space's references, then random members: `count` of them."""
    from tdbnas.spaces import ARCHS

    chosen = list(archs)
    if space is not None:
        chosen += [ARCHS.get(n).arch for n in ARCHS.names() if space.contains(ARCHS.get(n).arch)]
        index = 0
        while len(dict.fromkeys(chosen)) < count:
            chosen.append(space.sample(seed + index))
            index += 1
    return list(dict.fromkeys(chosen))[:count]


def _calibrate(args, table, name, runner, version, space, archs, head, cache):
    from tdbnas.latency.predictor import calibrate
    from tdbnas.latency.profiles import units_for
    from tdbnas.latency.profiling import measure_detectors, profile_units

    chosen = calibration_archs(args.calibrate, space, archs, args.seed)
    if not chosen:
        raise ValueError("--calibrate needs --space or --arch to choose detectors from")
    # Their units must be in the table too (random members need not be covered by --arch).
    profile_units(units_for(args.resolution, archs=chosen, head=head, width_multiplier=args.width_multiplier),
                  table=table, profile=name, runner=runner, cache_dir=cache, progress=not args.no_progress,
                  device=args.device, builder=_builder(args))
    measured = measure_detectors(chosen, args.resolution, table=table, profile=name, runner=runner,
                                 cache_dir=cache, head=head, width_multiplier=args.width_multiplier,
                                 progress=not args.no_progress, device=args.device,
                                 builder=_builder(args, detector=True))
    calibration = calibrate(table, name, [(m.arch, m.resolution, m.value_ms) for m in measured],
                            runtime_version=version, head=head, width_multiplier=args.width_multiplier)
    print(f"calibration: measured = {calibration.a:.4f} * sum + {calibration.b:.3f} ms "
          f"(fitted on {len(measured)} detectors)")
    return calibration
