"""`tdbnas run`: profile, supernet, search, retrain, export, measure and report in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from tdbnas.cli.common import positive_float, positive_int

EPILOG = """\
Settings: the built-in defaults, then --config FILE (YAML/JSON, or a built-in: default, full),
then flags. The resolved settings are saved as OUT/config.yaml. Every stage writes into
OUT/<stage>/ and marks itself done; rerunning the same command skips finished stages and
resumes the one in flight (a kill loses at most the step, unit or evaluation in flight).

The default (no flags) generates the built-in synthetic dataset, profiles the tdb-lite space on
this CPU, trains a supernet, searches under a budget taken from the space itself (median
predicted latency), fine-tunes the winner, exports int8 TFLite, times it here, and writes
OUT/report/report.md and report.html.

examples:
  tdbnas run                                          the built-in default into runs/tdbnas
  tdbnas run --budget-ms 6 --out runs/b6              a stricter CPU budget
  tdbnas run --device edgetpu --budget-ms 7           search against the modelled Edge TPU profile
  tdbnas run --config full --data /data/coco --out runs/coco   MobileDets/DetNAS-sized settings
  tdbnas run --data my_labels --resolution 320 --head auto     your COCO export, anchors fitted to it
  tdbnas run --set search.generations=8 --set supernet.max_minutes=10
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="the whole flow: profile, search, retrain, export, measure, report",
                            description="Search a detector under a latency budget and ship it, in one command.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="YAML/JSON settings, or a built-in name (default, full)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default runs/tdbnas)")
    parser.add_argument("--device", choices=("cpu", "edgetpu", "dsp"), help="device profile (default cpu)")
    parser.add_argument("--budget-ms", type=positive_float, metavar="MS", help="latency budget (default: auto)")
    parser.add_argument("--data", metavar="DIR", help="a COCO-format dataset instead of the built-in one")
    parser.add_argument("--resolution", type=positive_int, help="square input size")
    parser.add_argument("--space", help="search space (registered name or description file)")
    parser.add_argument("--threads", type=positive_int, help="interpreter threads for profiling and timing")
    parser.add_argument("--head", choices=("auto",), help="auto: anchors fitted to the training boxes (head: auto)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any setting, dotted (e.g. search.generations=8); the value is read as YAML")
    parser.add_argument("--until", choices=("data", "latency", "supernet", "search", "retrain", "export",
                                            "measure", "report"), help="stop after this stage")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    parser.set_defaults(handler=run)


def overrides_from(args: argparse.Namespace) -> dict:
    import yaml

    overrides: dict = {}

    def put(dotted: str, value) -> None:
        node = overrides
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    for flag, key in (("out", "out"), ("budget_ms", "latency.budget_ms"), ("data", "data.root"),
                      ("resolution", "resolution"), ("space", "space"), ("threads", "device.threads"),
                      ("device", "device.name"), ("head", "head")):
        value = getattr(args, flag)
        if value is not None:
            put(key, value)
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE (e.g. search.generations=8), got {item!r}")
        put(key, yaml.safe_load(text))
    return overrides


def run(args: argparse.Namespace) -> int:
    from tdbnas.pipeline import run_pipeline
    from tdbnas.pipeline.config import dump, resolve

    config = resolve(args.config, overrides_from(args))
    if args.print_config:
        print(dump(config), end="")
        return 0
    results = run_pipeline(config, until=args.until)
    if "report" in results:
        from tdbnas.pipeline.report import headline
        from tdbnas.pipeline.stages import Run

        for line in headline(Run(config, Path(config["out"]), results=results)):
            print(line)
        print(f"report: {results['report']['html']} (and report.md beside it)")
    return 0
