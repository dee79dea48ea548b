"""``geogate node``: run one scoring node."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from shared.config import ConfigError, NodeConfig, add_arguments, build_config
from shared.logs import setup_logging
from shared.runtime import run as run_service

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run a scoring node",
        description="Serve address similarity and parsing from one model replica. "
        "Every flag can also be set as GEOGATE_<FLAG> in the environment or in --config FILE (section node:).",
    )
    add_arguments(parser, NodeConfig)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "run", "command")}
    try:
        config = build_config(NodeConfig, section="node", file=args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"geogate node: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, json_lines=config.log_format == "json", region=config.region, color=config.color,
                  node=config.advertise_url or f"{config.host}:{config.port}")
    from node.server import serve

    code = run_service(serve(config))
    logging.shutdown()
    # A model load or a fault hold may still occupy a worker thread, and the interpreter
    # would join it at exit: leave now, everything that matters is flushed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
