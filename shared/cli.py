"""The ``geogate`` console script: one entry, subcommands per service.

Subcommands import their service lazily, so ``geogate node --help`` does not import the
gateway and the gateway never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="geogate", description="Multi-region inference gateway for address models (MGeo)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from gateway.cli import add_parser as add_gateway
    from node.cli import add_parser as add_node

    add_node(sub)
    add_gateway(sub)

    mgeo = sub.add_parser("mgeo", help="MGeo model tools")
    mgeo_sub = mgeo.add_subparsers(dest="mgeo_command", required=True, metavar="COMMAND")
    convert = mgeo_sub.add_parser(
        "convert",
        help="turn an MGeo text checkpoint into a plain transformers BERT directory",
        description="Rename MGeo's text-encoder weights to BERT's so the hf backend (batching, fp16, int8) "
        "serves real MGeo weights.",
    )
    convert.add_argument("src", type=Path, help="MGeo model directory (ModelScope layout)")
    convert.add_argument("dst", type=Path, help="output directory (must not exist or be empty)")
    convert.set_defaults(run=_convert)

    args = parser.parse_args(argv)
    return int(args.run(args))


def _convert(args: argparse.Namespace) -> int:
    from node.mgeo_convert import ConversionError, convert

    try:
        convert(args.src, args.dst)
    except (ConversionError, FileNotFoundError) as exc:
        print(f"geogate mgeo convert: {exc}", file=sys.stderr)
        return 2
    print(f"converted {args.src} -> {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
