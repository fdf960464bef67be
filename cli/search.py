"""`tdbnas search`: latency-constrained search of a space, ranked by an accuracy signal.

The command is a thin front over `tdbnas.search.run_search`. The fitness comes from
`fitness_factory(args)`: the `--signal` (`tdbnas.search.signals`; a supernet's mAP after BN
recalibration, a zero-shot score at initialisation, or MAdds/params), built in each worker;
Python callers (and tests) that want another fitness call `run_search` directly, or replace
`tdbnas.cli.search.fitness_factory` (monkeypatch) with a function returning a picklable
zero-argument factory.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdbnas.cli.common import positive_float, positive_int, resolution
from tdbnas.search.settings import ALGORITHMS
from tdbnas.search.signals import DEFAULT_SIGNAL, SIGNALS, default_signal

if TYPE_CHECKING:
    from tdbnas.search.settings import SearchSettings

EPILOG = """\
Each --profile pairs with the --budget-ms at the same position; a candidate must fit every
budget (predicted latency of the whole SSDLite detector at --resolution). Built-in profiles:
edgetpu and dsp (modelled), cpu (measured on this machine: the first use profiles the whole
space, which takes a while). A budget below the smallest latency the space can reach is
reported before anything is evaluated. Rerunning the same command resumes the run in --out
and reaches the same result as an uninterrupted run; --generations may be raised to extend it.

Defaults are the DetNAS evolution: population 50, top-10 parents, 20 mutations (p = 0.1 per
gene), 20 crossovers, 10 random, 20 generations. Outputs in --out: search.sqlite (every
evaluation), best_arch.txt, result.json, search.png, config.json.

The accuracy signal (--signal) ranks the candidates. How far each ranking agrees with
stand-alone training was measured on the built-in setting (benchmarks/results/signals.md) and
is stated in result.json; the zero-shot signals need no supernet (seconds per candidate).

examples:
  tdbnas search --space tdb-lite --resolution 160 --profile cpu --budget-ms 2.6 --data data/synth
  tdbnas search --space tdb --profile edgetpu --budget-ms 7 --signal supernet --supernet runs/sn --data data/coco
  tdbnas search --space tdb --profile edgetpu --budget-ms 7 --profile cpu --budget-ms 30 \\
      --supernet CKPT --data DIR --out runs/search-tdb --ray
  tdbnas search --space tdb --profile dsp --budget-ms 12 --algorithm pareto --supernet CKPT --data DIR
  tdbnas search --space tdb --profile edgetpu --budget-ms 7 --algorithm random --generations 20 ...
  tdbnas search ... --ray auto                    join the running Ray cluster (or ray://host:10001)
  tdbnas search --space tdb --cost-model npu.json --budget-ms 12 --signal entropy --data DIR
      (a cost model fitted with `tdbnas latency fit` on any device; its budget is the --budget-ms at
      its position among --profile and --cost-model)
"""


class _AppendCostModel(argparse.Action):
    """`--cost-model FILE` joins the --profile list as `cost-model:FILE`, keeping the order that
    pairs each latency constraint with its --budget-ms."""

    def __call__(self, parser, namespace, values, option_string=None):
        from tdbnas.latency.learned_predictor import PREFIX

        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), f"{PREFIX}{values}"])

# Flags that map onto SearchSettings fields: (flag, field, type, help).
SETTING_FLAGS = (
    ("--generations", "generations", positive_int, "generations (default 20)"),
    ("--population", "population", positive_int, "candidates per generation (default 50)"),
    ("--parents", "parents", int, "top-k parents (default 10)"),
    ("--mutations", "mutations", int, "mutants per generation (default 20)"),
    ("--crossovers", "crossovers", int, "crossovers per generation (default 20)"),
    ("--mutation-prob", "mutation_prob", float, "per-gene mutation probability (default 0.1)"),
    ("--seed", "seed", int, "search seed (default 0)"),
    ("--metric", "metric", str, "fitness key to maximise (default score: the signal's value)"),
    ("--pareto-profile", "pareto_profile", str, "latency axis of --algorithm pareto (default: the first profile)"),
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("search", help="latency-constrained evolutionary / random / Pareto search",
                            description="Search a space for the most accurate detector within latency budgets.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", help="search space (default: the supernet's, else tdb)")
    parser.add_argument("--profile", action="append", default=[], metavar="NAME",
                        help="latency profile, e.g. edgetpu, dsp, cpu (repeatable)")
    parser.add_argument("--cost-model", action=_AppendCostModel, dest="profile", metavar="FILE",
                        help="a fitted cost model (tdbnas latency fit) as a latency constraint (repeatable)")
    parser.add_argument("--budget-ms", action="append", default=[], type=positive_float, metavar="MS",
                        help="latency budget of the --profile/--cost-model at the same position (repeatable)")
    without_data = default_signal(has_data=False)
    parser.add_argument("--signal", choices=SIGNALS, default=None,
                        help=f"accuracy signal that ranks candidates (default: supernet with --supernet, else "
                             f"{DEFAULT_SIGNAL}" + (f"; {without_data} without --data)"
                                                    if without_data != DEFAULT_SIGNAL else ")"))
    parser.add_argument("--supernet", metavar="CKPT", help="trained supernet checkpoint (the supernet signal)")
    parser.add_argument("--data", metavar="DIR",
                        help="dataset for BN recalibration and the search split (default: the supernet run's)")
    parser.add_argument("--device", default="cpu", help="device of the supernet evaluator: cpu, cuda, auto")
    parser.add_argument("--out", metavar="DIR", help="run directory (default runs/search-SPACE-ALGORITHM-sSEED)")
    parser.add_argument("--resolution", type=resolution, default=None, metavar="N|HxW",
                        help="input size (default: the supernet's training resolution, else 320)")
    parser.add_argument("--num-classes", type=positive_int, default=None, metavar="N",
                        help="classes of the latency head (default: the supernet's dataset, else 90)")
    parser.add_argument("--head", dest="head_settings", metavar="YAML|FILE",
                        help="SSDLite head settings as a YAML/JSON mapping or file, e.g. "
                             "'{from_features: [C3, C4, C5], extra_depths: [512, 256, 256]}' (default: the "
                             "supernet's, else the MobileDets layout)")
    parser.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M")
    parser.add_argument("--max-madds", type=positive_float, metavar="N", help="detector multiply-adds limit")
    parser.add_argument("--max-params", type=positive_float, metavar="N", help="detector parameter limit")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="evaluate on Ray: a local cluster, or the cluster at ADDRESS (auto, ray://host:10001)")
    parser.add_argument("--workers", type=positive_int, metavar="N", help="Ray workers (default: one per CPU)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs per Ray worker")
    parser.add_argument("--table", metavar="PATH", help="latency table (default ~/.cache/tdbnas/latency.sqlite)")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N",
                        help="threads for first-use profiling of cpu (default 1)")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default=None, help="evolution (default), random or pareto")
    for flag, name, kind, text in SETTING_FLAGS:
        parser.add_argument(flag, dest=name, type=kind, default=None, help=text)
    parser.add_argument("--quiet", action="store_true", help="no per-generation progress")
    parser.set_defaults(handler=run)


def fitness_factory(args: argparse.Namespace) -> Any:
    """The picklable zero-argument factory of the fitness (see the module docstring)."""
    from tdbnas.search.signals import SignalFactory, head_items
    from tdbnas.spaces import SSDLiteHead

    if args.signal == "supernet":
        if not args.supernet:
            raise ValueError("--signal supernet needs --supernet CKPT (a run of `tdbnas supernet train`); the "
                             "zero-shot signals need none (e.g. --signal entropy)")
        if not Path(args.supernet).exists():
            raise FileNotFoundError(f"supernet checkpoint {args.supernet} does not exist")
    elif args.data and not Path(args.data).exists():
        raise FileNotFoundError(f"dataset {args.data} does not exist")
    head = args.head or SSDLiteHead(num_classes=args.num_classes)
    factory = SignalFactory(args.signal, tuple(args.resolution), head_items(head), data=args.data,
                            supernet=args.supernet, seed=args.seed or 0, options=(("device", args.device),)
                            if args.signal == "supernet" else ())
    factory.check()
    return factory


def search_head(args: argparse.Namespace, recorded: dict):
    """The head the signal scores and the latency predictor times: the supernet's (it was
    trained with it), else --head, else the MobileDets layout."""
    from tdbnas.detection.train import TrainConfig, head_settings
    from tdbnas.spaces import SSDLiteHead

    if args.head_settings and recorded.get("head"):
        raise ValueError("--head does not apply with --supernet: the search uses the head the supernet was "
                         "trained with")
    settings = recorded.get("head") or (read_mapping(args.head_settings, "--head") if args.head_settings else None)
    if not settings:
        return SSDLiteHead(num_classes=args.num_classes)
    return head_settings(TrainConfig(head=settings), args.num_classes)


def read_mapping(text: str, what: str) -> dict:
    """A YAML/JSON mapping given as a file path or inline (safe loader)."""
    import yaml

    from tdbnas.cli.train import load_settings

    try:
        is_file = Path(text).is_file()
    except OSError:  # e.g. an inline mapping longer than a file name may be
        is_file = False
    if is_file:
        return load_settings(text)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} is neither a file nor a YAML/JSON mapping: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a mapping such as '{{from_features: [C3, C4, C5]}}' or a file holding one, "
                         f"got {text!r}")
    return value


def dataset_classes(data: str | None) -> int | None:
    """Class count of a COCO-format dataset's train split, if readable."""
    import json

    if not data:
        return None
    annotations = Path(data) / "annotations" / "instances_train.json"
    if not annotations.is_file():
        return None
    return len(json.loads(annotations.read_text()).get("categories", [])) or None


def supernet_defaults(checkpoint: str) -> dict:
    """Space, resolution and class count a supernet run recorded (config.json beside or inside)."""
    import json

    path = Path(checkpoint)
    config_path = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not config_path.is_file():
        return {}
    config = json.loads(config_path.read_text())
    found = {k: config[k] for k in ("space", "resolution", "head") if k in config}
    annotations = Path(config.get("data", "")) / "annotations" / f"instances_{config.get('train_split', 'train')}.json"
    if annotations.is_file():
        found["num_classes"] = len(json.loads(annotations.read_text()).get("categories", [])) or None
    return found


def settings_from_args(args: argparse.Namespace) -> SearchSettings:
    from tdbnas.search.settings import SearchSettings

    names = ["algorithm"] + [name for _, name, _, _ in SETTING_FLAGS]
    values = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return SearchSettings.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from tdbnas.cli.profile import open_table
    from tdbnas.cli.spaces import load_space
    from tdbnas.latency import profiles
    from tdbnas.latency.learned_predictor import CostModelPredictor, is_cost_model
    from tdbnas.search import Budget, Constraints, run_search
    from tdbnas.search.parallel import make_evaluator, ray_available
    from tdbnas.spaces import as_hw

    if not args.profile:
        raise ValueError("give at least one --profile NAME (or --cost-model FILE) --budget-ms MS (e.g. --profile "
                         "edgetpu --budget-ms 7)")
    if len(args.profile) != len(args.budget_ms):
        raise ValueError(f"{len(args.profile)} --profile but {len(args.budget_ms)} --budget-ms: give one budget per "
                         "profile, in the same order")
    fallback_note = None
    if args.signal is None:
        args.signal = "supernet" if args.supernet else default_signal(bool(args.data))
        if args.signal not in ("supernet", DEFAULT_SIGNAL):
            fallback_note = (f"note: the default signal {DEFAULT_SIGNAL} scores real images and no --data was given; "
                             f"ranking by {args.signal}, the best measured signal that needs none")
    if args.metric is None:
        args.metric = "score"  # every signal reports its value as "score" (the supernet's is its mAP)
    settings = settings_from_args(args)
    recorded = supernet_defaults(args.supernet) if args.supernet else {}
    args.space = args.space or recorded.get("space") or "tdb"
    args.resolution = args.resolution or as_hw(recorded.get("resolution", 320))
    args.num_classes = args.num_classes or recorded.get("num_classes") or dataset_classes(args.data) or 90
    space = load_space(args.space)
    args.head = search_head(args, recorded)
    head = args.head
    factory = fitness_factory(args)
    out = Path(args.out or f"runs/search-{space.name}-{settings.algorithm}-s{settings.seed}")
    say = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    with open_table(args.table) as lut:
        budgets = []
        for name, budget in zip(args.profile, args.budget_ms):
            if is_cost_model(name):
                learned = CostModelPredictor.load(name, space)
                learned.check(args.resolution, head, args.width_multiplier)
                budgets.append(Budget(learned, budget))
                continue
            spec = profiles.profile_spec(name)
            if spec is not None and spec.kind == "measured":
                say(f"profile {name}: measuring the units of space {space.name} this table lacks (first use only)")
            predictor = profiles.get_predictor(name, args.resolution, space=space, table=lut, head=head,
                                               width_multiplier=args.width_multiplier, threads=args.threads)
            budgets.append(Budget(predictor, budget))
        constraints = Constraints(budgets, resolution=args.resolution, head=head,
                                  width_multiplier=args.width_multiplier, max_madds=args.max_madds,
                                  max_params=args.max_params)
        constraints.check_reachable(space)  # fail fast, before Ray starts
        if fallback_note:
            say(fallback_note)
        ray = args.ray
        if ray is not None and not ray_available():
            say("Ray is not installed (pip install 'tdbnas[distributed]'): evaluating serially")
            ray = None
        evaluator = make_evaluator(factory, ray, workers=args.workers, gpus_per_worker=args.gpus_per_worker)
        try:
            from tdbnas.search.signals import measured_fidelity

            details = {"command": {k: v for k, v in vars(args).items() if k not in ("handler", "head")},
                       "table": str(lut.path), "signal": args.signal, "fidelity": measured_fidelity(args.signal)}
            identity = {"signal": args.signal, "supernet": str(args.supernet) if args.supernet else None,
                        "data": str(args.data) if args.data else None, "head": dataclasses.asdict(head)}
            result = run_search(space, evaluator, constraints, settings, out, log=say, details=details,
                                fitness_identity=identity)
        finally:
            evaluator.close()
    from tdbnas.search.signals import fidelity_sentence

    best = result.best
    latency = ", ".join(f"{p} {best.latency_ms[p]:.2f} ms" for p in constraints.profiles)
    print(fidelity_sentence(args.signal))
    print(f"best {settings.metric} {best.score:.4f} ({latency}; {best.madds / 1e9:.3f} GMAdds, "
          f"{best.params / 1e6:.2f} M params) after {len(result.evaluations)} evaluations")
    print(best.arch)
    if settings.algorithm == "pareto":
        print(f"Pareto front on {result.front_profile}: {len(result.front)} architectures (result.json)")
    print(f"-> {out}/best_arch.txt, result.json, search.png, search.sqlite")
    return 0
