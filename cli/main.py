"""`tdbnas`: the command-line front. Thin: parsing and printing only; the work is in the library.

Heavy frameworks are imported by the commands that need them, so `tdbnas --help` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from tdbnas.cli import arch, spaces

EPILOG = """\
examples:
  tdbnas arch list                              reference architectures with MAdds and params
  tdbnas arch show mobiledet-edgetpu            layer table, endpoints, costs at 320x320
  tdbnas arch show 'conv_k3_s2_c32/ds_k3_c16/...' --resolution 640x320
  tdbnas spaces                                 every search space, its size and distinct layers
  tdbnas spaces tdb --sample 3 --seed 0         slots of a space and three random members

Set TDBNAS_DEBUG=1 to see full tracebacks.
"""

COMMANDS = (arch, spaces)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdbnas", description="Search object-detection networks for mobile accelerators under a "
                                   "latency budget and ship them as int8 TFLite.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # `tdbnas ... | head`
        return 0
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        if os.environ.get("TDBNAS_DEBUG"):
            traceback.print_exc()
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"tdbnas {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
