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

    from gateway.admin_cli import add_parser as add_admin
    from gateway.cli import add_parser as add_gateway
    from node.cli import add_parser as add_node

    add_node(sub)
    add_gateway(sub)
    add_admin(sub)

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

    registry = sub.add_parser("registry", help="version registry tools")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    init = registry_sub.add_parser(
        "init",
        help="seed the registry from what the deployed nodes report",
        description="Wait until every --node answers /health/ready, read each one's color, model version and "
        "checksum, and create the registry record with those (an existing record is left alone).",
    )
    init.add_argument("--registry-url", required=True, help="the registry's store (redis://, redis+sentinel://)")
    init.add_argument("--namespace", default="geogate", help="key prefix in the store")
    init.add_argument("--node", action="append", required=True, metavar="URL", help="a node's URL (repeat)")
    init.add_argument("--regions", required=True, help="comma-separated regions of the deployment")
    init.add_argument("--active", default="blue", help="the color that serves first")
    init.add_argument("--wait-s", type=float, default=600.0, help="how long to wait for the nodes")
    init.add_argument("--ca", help="CA bundle to verify nodes served over HTTPS")
    init.set_defaults(run=_registry_init)

    from shared.launcher.cli import add_parsers as add_launcher

    add_launcher(sub)

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


def _registry_init(args: argparse.Namespace) -> int:
    import asyncio
    import ssl

    from shared.bootstrap import BootstrapError, read_identities, seed_registry
    from shared.errors import StoreUnavailable
    from shared.registry import Registry
    from shared.store import open_store

    async def seed() -> int:
        ctx = ssl.create_default_context(cafile=args.ca) if args.ca else None
        nodes = await read_identities(args.node, wait_s=args.wait_s, ssl_context=ctx,
                                      on_wait=lambda waiting: print(f"waiting for {len(waiting)} node(s)", flush=True))
        store = open_store(args.registry_url)
        try:
            regions = [r.strip() for r in args.regions.split(",") if r.strip()]
            record, created = await seed_registry(Registry(store, namespace=args.namespace), nodes,
                                                  active=args.active, regions=regions, who="registry-init")
        finally:
            await store.close()
        colors = ", ".join(f"{c}={i.model_version}" for c, i in sorted(record.colors.items()))
        print(f"{'created' if created else 'already present, left alone'}: epoch {record.epoch}, "
              f"active {record.active_color}, {colors}")
        return 0

    try:
        return asyncio.run(seed())
    except (BootstrapError, StoreUnavailable) as exc:
        print(f"geogate registry init: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
