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

    geoip = sub.add_parser("geoip", help="GeoIP database tools")
    geoip_sub = geoip.add_subparsers(dest="geoip_command", required=True, metavar="COMMAND")
    build = geoip_sub.add_parser(
        "build",
        help="build an offline country .mmdb from Debian's tor-geoipdb (IPFire Location data, CC BY-SA 4.0)",
        description="Convert the IP ranges of Debian's tor-geoipdb package (apt-get install tor-geoipdb) into a "
        "MaxMind-format country database the gateway reads. Data: IPFire Location, CC BY-SA 4.0.",
    )
    build.add_argument("--source", type=Path, default=Path("/usr/share/tor"), help="folder with geoip and geoip6")
    build.add_argument("--out", type=Path, default=None, help="output file (default: ~/.cache/geogate/country.mmdb)")
    build.set_defaults(run=_geoip_build)

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


def _geoip_build(args: argparse.Namespace) -> int:
    from gateway.geoip_build import ATTRIBUTION, build, default_output

    v4, v6 = args.source / "geoip", args.source / "geoip6"
    if not v4.is_file():
        print(f"geogate geoip build: {v4} not found; install Debian's tor-geoipdb (apt-get install tor-geoipdb) "
              "or pass --source", file=sys.stderr)
        return 2
    out = args.out or default_output()
    try:
        stats = build(v4, v6 if v6.is_file() else None, out, lambda line: print(line, flush=True))
    except ValueError as exc:
        print(f"geogate geoip build: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {stats.output}: {stats.countries} countries, {stats.networks} networks from {stats.ranges} ranges "
          f"in {stats.seconds:.0f}s\ndata: {ATTRIBUTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
