"""The ``facesearch`` command: a thin shell over the pipeline, models and eval packages.

Each subcommand parses arguments, calls the library and prints; ``--json`` gives the
same result machine-readably. Typed facesearch errors exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facesearch.errors import FacesearchError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        return args.handler(args) or 0
    except FacesearchError as exc:
        print(f"facesearch: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"facesearch: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from facesearch.cli import commands

    parser = argparse.ArgumentParser(prog="facesearch", description="Self-hosted, accountable face search.")
    parser.add_argument("--pack", default=None, help="built-in pack name or pinned local pack directory "
                        "(default: buffalo_s)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("detect", help="find faces in an image: boxes, landmarks, quality")
    p.add_argument("image", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--draw", type=Path, metavar="OUT.png", help="save a copy with boxes and landmarks drawn")
    p.set_defaults(handler=commands.detect)

    p = sub.add_parser("verify", help="are the faces in two photos the same person?")
    p.add_argument("image_a", type=Path)
    p.add_argument("image_b", type=Path)
    p.add_argument("--face", type=int, nargs=2, metavar=("N_A", "N_B"), default=None,
                   help="pick face N of each photo (-1 = the largest central one)")
    p.add_argument("--threshold", type=float, default=None, help="override the calibrated threshold")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=commands.verify)

    p = sub.add_parser("models", help="list model packs, their files, hashes and licences")
    p.add_argument("--dir", type=Path, action="append", default=[], help="also show this pinned local pack")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=commands.models_list)
    models_sub = p.add_subparsers(metavar="ACTION")
    pin = models_sub.add_parser("pin", help="record the SHA-256 of a local InsightFace-layout pack")
    pin.add_argument("directory", type=Path)
    pin.add_argument("--name", default=None)
    pin.add_argument("--licence", default=None, help="licence text to record with the pack")
    pin.set_defaults(handler=commands.models_pin)

    p = sub.add_parser("eval", help="accuracy protocols over real datasets")
    eval_sub = p.add_subparsers(metavar="PROTOCOL")
    lfw = eval_sub.add_parser("lfw", help="LFW view 2 verification (10 folds of pairs.txt)")
    lfw.add_argument("--data", type=Path, required=True, help="LFW folder with pairs.txt and images/")
    lfw.add_argument("--json", action="store_true", help="print JSON")
    lfw.add_argument("--calibration-out", type=Path, default=None,
                     help="also write a score calibration from all cross-identity pairs")
    lfw.set_defaults(handler=commands.eval_lfw)
    return parser


if __name__ == "__main__":
    sys.exit(main())
