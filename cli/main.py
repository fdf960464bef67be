"""`tdbnas`: the command-line front. Thin: parsing and printing only; the work is in the library.

Heavy frameworks are imported by the commands that need them, so `tdbnas --help` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from tdbnas.cli import arch, data, export, latency, predict, profile, run, search, spaces, supernet, train

EPILOG = """\
examples:
  tdbnas run                                    the whole flow on the built-in default (~20 min on 2 cores)
  tdbnas arch list                              reference architectures with MAdds and params
  tdbnas arch show mobiledet-edgetpu            layer table, endpoints, costs at 320x320
  tdbnas arch show 'conv_k3_s2_c32/ds_k3_c16/...' --resolution 640x320
  tdbnas spaces                                 every search space, its size and distinct layers
  tdbnas spaces tdb --sample 3 --seed 0         slots of a space and three random members
  tdbnas data synth --out data/synth            write the built-in synthetic dataset (COCO format)
  tdbnas train --data DIR --out runs/a          train an SSDLite detector (resumes if interrupted)
  tdbnas eval --weights runs/a/model.pt         COCO mAP with pycocotools
  tdbnas profile --space tdb --device cpu       measure the space's ops on this CPU (resumes)
  tdbnas predict --arch mobiledet-edgetpu       predicted latency on this CPU, per unit
  tdbnas latency show                           latency tables: profiles, entries, calibrations
  tdbnas supernet train --space tdb --data DIR --out runs/sn   one-shot supernet (DetNAS), resumes
  tdbnas search --profile edgetpu --budget-ms 7 --supernet CKPT --data DIR   evolution under a latency budget
  tdbnas export --weights runs/a/model.pt --out m.tflite --verify   int8 TFLite + post-processing op, verified

Set TDBNAS_DEBUG=1 to see full tracebacks.
"""

COMMANDS = (run, arch, spaces, data, train, supernet, profile, predict, latency, search, export)


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
        message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        # One printable line, always: line breaks inside (a file name with one, a subprocess's stderr)
        # are escaped, and so is what the terminal cannot encode (lone surrogates from a JSON file).
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        message = message.encode(encoding, "backslashreplace").decode(encoding)
        print(f"tdbnas {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
