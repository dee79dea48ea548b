"""``geogate gateway``: run one gateway process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from shared.config import ConfigError, GatewayConfig, add_arguments, build_config
from shared.logs import setup_logging

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run a gateway",
        description="Route address-model calls by client region to healthy nodes of the active color. "
        "Every flag can also be set as GEOGATE_<FLAG> or in --config FILE (section gateway:); the same file's "
        "regions:, countries: and nodes: describe the topology.",
    )
    add_arguments(parser, GatewayConfig)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gateway.topology import load_topology

    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "run", "command")}
    try:
        config = build_config(GatewayConfig, section="gateway", file=args.config, overrides=overrides)
        topology = load_topology(args.config)
    except ConfigError as exc:
        print(f"geogate gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, json_lines=config.log_json, region=config.region, service="gateway")
    from gateway.server import serve

    try:
        import uvloop

        code = uvloop.run(serve(config, topology))
    except ImportError:
        code = asyncio.run(serve(config, topology))
    logging.shutdown()
    return code
