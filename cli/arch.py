"""`tdbnas arch list | show`: reference architectures, layer tables and costs."""

from __future__ import annotations

import argparse
import json

from tdbnas.cli.common import billions, millions, positive_float, positive_int, resolution, table
from tdbnas.spaces.describe import LAYER_HEADERS, layer_rows

SHOW_EPILOG = """\
ARCH is a registered name (see `tdbnas arch list`), an architecture string, or a .json file
written by `--json`. Costs follow the convention in tdbnas.spaces.costs (conv multiply-adds;
weights, biases and BN scale/offset as params; the class head has a background slot).

examples:
  tdbnas arch show mobiledet-cpu
  tdbnas arch show mobiledet-cpu --resolution 640x320       endpoint shapes on a 640x320 input
  tdbnas arch show detnas-300m --num-classes 6 --json > arch.json
  tdbnas arch show mobiledet-edgetpu+nasfpn-lite              with a named feature pyramid
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("arch", help="show reference architectures or any architecture string",
                            description="Inspect architectures: layer tables, endpoints, MAdds and params.")
    commands = parser.add_subparsers(dest="arch_command", metavar="SUBCOMMAND")
    commands.required = True

    show = commands.add_parser("show", help="layer table, endpoints and costs of one architecture",
                               epilog=SHOW_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("arch", metavar="ARCH", help="registered name, architecture string or JSON file")
    _cost_options(show)
    show.add_argument("--json", action="store_true", help="print a JSON record instead of tables")
    show.set_defaults(handler=run_show)

    listing = commands.add_parser("list", help="registered reference architectures with their costs",
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="example:\n  tdbnas arch list --resolution 320 --num-classes 90")
    _cost_options(listing)
    listing.set_defaults(handler=run_list)


def _cost_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resolution", type=resolution, default=(320, 320), metavar="N|HxW",
                        help="input size (default 320)")
    parser.add_argument("--num-classes", type=positive_int, default=90, metavar="N",
                        help="object classes, background excluded (default 90, COCO)")
    parser.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="M",
                        help="scale every width, TF rounding to multiples of 8 (default 1.0)")


def run_show(args: argparse.Namespace) -> int:
    from tdbnas.spaces import ARCHS, SSDLiteHead, detector_cost, resolve_arch

    arch = resolve_arch(args.arch)
    name = args.arch if args.arch in ARCHS else None
    head = SSDLiteHead(num_classes=args.num_classes)
    hw, m = args.resolution, args.width_multiplier
    cost = detector_cost(arch, hw, args.num_classes, m, head)
    maps = head.feature_maps(arch, hw, m)
    anchors = head.num_anchors(arch, hw)
    published = ARCHS.get(name).published if name else {}
    if args.json:
        record = {"name": name, "arch": arch.encode(), "resolution": list(hw), "width_multiplier": m,
                  "num_classes": args.num_classes,
                  "backbone": {"madds": cost.backbone.madds, "params": cost.backbone.params},
                  "pyramid": {"madds": cost.pyramid.madds, "params": cost.pyramid.params},
                  "head": {"madds": cost.head.madds, "params": cost.head.params, "anchors": anchors},
                  "total": {"madds": cost.total.madds, "params": cost.total.params},
                  "features": [{"name": f.name, "hw": list(f.hw), "channels": f.channels, "stride": f.stride}
                               for f in maps],
                  "published": published, "spec": arch.to_json_dict()}
        print(json.dumps(record, indent=2))
        return 0
    title = f"{ARCHS.get(name).title} ({name})" if name else "architecture"
    print(title)
    print(f"arch: {arch.encode()}")
    print(f"input {hw[0]}x{hw[1]}, width multiplier {m:g}, {args.num_classes} classes\n")
    print(table(list(LAYER_HEADERS), layer_rows(arch, hw, m), right=("#", "blk", "MAdds(M)", "params(K)")))
    print()
    print("feature maps: " + ", ".join(f"{f.name} {f.hw[0]}x{f.hw[1]}x{f.channels}" for f in maps)
          + f"; {anchors} anchors")
    print(f"backbone:     {billions(cost.backbone.madds)} B MAdds, {millions(cost.backbone.params)} M params")
    if arch.pyramid is not None:
        print(f"pyramid:      {billions(cost.pyramid.madds)} B MAdds, {millions(cost.pyramid.params)} M params "
              f"({len(arch.pyramid.cells)} merging cells x {arch.pyramid.stack}, {arch.pyramid.header()})")
    print(f"SSDLite head: {billions(cost.head.madds)} B MAdds, {millions(cost.head.params)} M params")
    print(f"detector:     {billions(cost.total.madds)} B MAdds, {millions(cost.total.params)} M params")
    if "madds_b" in published and hw == (320, 320) and m == 1.0:
        print(f"published:    {published['madds_b']} B MAdds, {published['params_m']} M params "
              f"(ours / published: {cost.total.madds / 1e9 / published['madds_b']:.3f} MAdds, "
              f"{cost.total.params / 1e6 / published['params_m']:.3f} params)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from tdbnas.spaces import ARCHS, SSDLiteHead, detector_cost

    head = SSDLiteHead(num_classes=args.num_classes)
    rows = []
    for name in ARCHS.names():
        ref = ARCHS.get(name)
        cost = detector_cost(ref.arch, args.resolution, args.num_classes, args.width_multiplier, head)
        pub = ref.published
        rows.append([name, ref.title, ref.space or "-", ref.arch.num_layers, billions(cost.total.madds),
                     millions(cost.total.params), pub.get("madds_b", "-"), pub.get("params_m", "-")])
    hw = args.resolution
    print(f"SSDLite detectors at {hw[0]}x{hw[1]}, {args.num_classes} classes, width multiplier "
          f"{args.width_multiplier:g}\n")
    print(table(["name", "title", "space", "layers", "MAdds(B)", "params(M)", "published MAdds(B)",
                 "published params(M)"], rows,
                right=("layers", "MAdds(B)", "params(M)", "published MAdds(B)", "published params(M)")))
    print("\n`tdbnas arch show NAME` prints the layer table.")
    return 0
