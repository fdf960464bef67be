"""`tdbnas spaces [NAME|FILE]`: search spaces, their size and distinct layer configurations."""

from __future__ import annotations

import argparse
import json

from tdbnas.cli.common import positive_float, positive_int, resolution, table

EPILOG = """\
Without NAME, lists every registered space. With a registered NAME or a space description
file (.yaml/.yml/.json; see tdbnas.spaces.space for the format), shows its slots.
"distinct layers" counts every (layer, input size, in/out channels, shortcut) a member can
contain at the resolution: the operators a latency table for the space must hold.

examples:
  tdbnas spaces
  tdbnas spaces --resolution 160
  tdbnas spaces tdb --sample 3 --seed 0
  tdbnas spaces my_space.yaml
  tdbnas spaces fbnet --sample 2          a categorical space (FBNet's 22 x 9, for learned cost models)
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("spaces", help="list search spaces or show one",
                            description="Search spaces: size, slots and distinct layer configurations.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", nargs="?", metavar="NAME|FILE", help="a registered space or a description file")
    parser.add_argument("--resolution", type=resolution, default=(320, 320), metavar="N|HxW",
                        help="input size for counting distinct layers (default 320)")
    parser.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M")
    parser.add_argument("--sample", type=positive_int, default=0, metavar="N", help="print N random members")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=run)


def load_space(text: str):
    """A registered space, `NAME+pyramid` or a description file (`tdbnas.spaces.pyramid_space.resolve_space`)."""
    from tdbnas.spaces.pyramid_space import resolve_space

    return resolve_space(text)


def run(args: argparse.Namespace) -> int:
    from tdbnas.spaces import SPACES, CategoricalSpace, resolve_genome_space

    if args.space is None:
        return _list(SPACES, args)
    space = resolve_genome_space(args.space)
    if isinstance(space, CategoricalSpace):
        return _show_categorical(space, args)
    return _show(space, args)


def _show_categorical(space, args: argparse.Namespace) -> int:
    """A plain categorical space (e.g. fbnet): slots, choices, attributes; members as choice names."""
    samples = [" ".join(space.names_of(space.random_genome(args.seed + i))) for i in range(args.sample)]
    if args.json:
        print(json.dumps({**space.to_description(), "size": space.size(), "samples": samples}, indent=2))
        return 0
    print(f"{space.name}: {space.description} (categorical: no architecture to build; cost models and search "
          "operators only)")
    print(f"size {space.size():.4g}, {len(space.slots)} slots; attributes per choice: "
          f"{', '.join(space.attribute_names) or 'none'}\n")
    print(table(["slot", "choices"], [[s.name, " ".join(str(c) for c in s.choices)] for s in space.slots]))
    for index, text in enumerate(samples):
        print(f"\nsample {index} (seed {args.seed + index}):\n{text}")
    return 0


def _list(spaces, args: argparse.Namespace) -> int:
    rows = []
    for name in spaces.names():
        space = spaces.get(name)
        rows.append({"name": name, "slots": len(space.slots), "size": space.size(),
                     "distinct_layers": len(space.layer_configs(args.resolution, args.width_multiplier)),
                     "description": space.description})
    if args.json:
        print(json.dumps({"resolution": list(args.resolution), "spaces": rows}, indent=2))
        return 0
    hw = args.resolution
    print(f"distinct layers at {hw[0]}x{hw[1]}\n")
    print(table(["name", "slots", "size", "distinct layers", "description"],
                [[r["name"], r["slots"], f"{r['size']:.3g}", r["distinct_layers"], r["description"]] for r in rows],
                right=("slots", "size", "distinct layers")))
    return 0


def _show(space, args: argparse.Namespace) -> int:
    configs = space.layer_configs(args.resolution, args.width_multiplier)
    samples = [space.sample(args.seed + i).encode() for i in range(args.sample)]
    if args.json:
        print(json.dumps({"name": space.name, "description": space.description, "size": space.size(),
                          "distinct_layers": len(configs),
                          "slots": [{"name": s.name, "choices": list(s.choices)} for s in space.slots],
                          "samples": samples}, indent=2))
        return 0
    print(f"{space.name}: {space.description}")
    print(f"size {space.size():.4g} ({space.size()} members), {len(space.slots)} slots, "
          f"{len(configs)} distinct layers at {args.resolution[0]}x{args.resolution[1]}\n")
    print(table(["slot", "choices"], [[s.name, " ".join(str(c) for c in s.choices)] for s in space.slots]))
    for index, text in enumerate(samples):
        print(f"\nsample {index} (seed {args.seed + index}):\n{text}")
    return 0
