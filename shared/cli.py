"""The ``geogate`` console script: one entry, whose subcommands each side registers
through the entry-point group ``geogate.commands`` (setup.cfg). This module knows
neither side: it only finds what is installed. Each entry point is a function that adds
one subcommand to the parser; subcommands import their service lazily, so
``geogate node --help`` does not import the gateway and the gateway never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version

__all__ = ["COMMANDS", "add_registry_parser", "build_parser", "main"]

COMMANDS = "geogate.commands"
# How ``geogate --help`` lists them: the everyday ones first.
ORDER = ("up", "down", "admin", "gateway", "node", "registry", "geoip", "mgeo")

EXAMPLES = """\
examples:
  geogate up                      run four regions on this machine (the demo); Ctrl-C stops it
  geogate admin status            the deployment geogate up started, as a table
  geogate admin switch --to green --reason "release 2026-12"
  geogate node --model demo --region eu-central --color blue --port 8081
  geogate gateway --config gateway.yaml
  geogate COMMAND --help          the options of one command
"""


def _version() -> str:
    try:
        return version("geogate")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: ours, and every installed side's subcommands."""
    parser = argparse.ArgumentParser(
        prog="geogate", description="Multi-region inference gateway for address models (MGeo).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"geogate {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    found = {ep.name: ep for ep in entry_points(group=COMMANDS)}
    for name in sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        found[name].load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


def add_registry_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    registry = sub.add_parser("registry", help="version registry tools",
                              description="Create the version registry of a deployment.")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    init = registry_sub.add_parser(
        "init",
        help="seed the registry from what the deployed nodes report",
        description="Wait until every --node answers /health/ready, read each one's color, model version and "
        "checksum, and create the registry record with those (an existing record is left alone).",
        epilog="example:\n  geogate registry init --registry-url redis://redis:6379/0 --regions eu-central,us-east "
        "\\\n      --node http://10.0.0.5:8081 --node http://10.0.0.6:8081",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--registry-url", required=True, help="the registry's store (redis://, redis+sentinel://)")
    init.add_argument("--namespace", default="geogate", help="key prefix in the store (default: %(default)s)")
    init.add_argument("--node", action="append", required=True, metavar="URL", help="a node's URL (repeat)")
    init.add_argument("--regions", required=True, help="comma-separated regions of the deployment")
    init.add_argument("--active", default="blue", help="the color that serves first (default: %(default)s)")
    init.add_argument("--wait-s", type=float, default=600.0,
                      help="how long to wait for the nodes, in seconds (default: %(default)s)")
    init.add_argument("--cacert", metavar="FILE", help="CA bundle to verify nodes served over HTTPS (default: the "
                      "system's)")
    init.set_defaults(run=_registry_init)


def _registry_init(args: argparse.Namespace) -> int:
    import asyncio
    import ssl

    from geogate.shared.bootstrap import BootstrapError, read_identities, seed_registry
    from geogate.shared.errors import StoreUnavailable
    from geogate.shared.registry import Registry
    from geogate.shared.store import open_store

    async def seed() -> int:
        ctx = ssl.create_default_context(cafile=args.cacert) if args.cacert else None
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
