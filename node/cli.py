"""``geogate node`` (run one scoring node) and ``geogate mgeo`` (MGeo model tools),
registered as entry points of the ``geogate`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from geogate.node.config import NodeConfig
from geogate.shared.config import ConfigError, add_arguments, build_config
from geogate.shared.logs import setup_logging
from geogate.shared.runtime import run as run_service

__all__ = ["add_mgeo_parser", "add_parser"]

NODE_EXAMPLES = """\
examples:
  geogate node --model demo --region eu-central --color blue --port 8081
  geogate node --model /models/mgeo-bert --device cuda --dtype fp16 --registry-url redis://redis:6379/0
  GEOGATE_REGION=us-east geogate node --config node.yaml --no-warmup
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run a scoring node",
        description="Serve address similarity and parsing from one model replica. "
        "Every flag can also be set as GEOGATE_<FLAG> in the environment or in --config FILE (section node:).",
        epilog=NODE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    from geogate.node.server import serve

    code = run_service(serve(config))
    logging.shutdown()
    # A model load or a fault hold may still occupy a worker thread, and the interpreter
    # would join it at exit: leave now, everything that matters is flushed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def add_mgeo_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mgeo = subparsers.add_parser("mgeo", help="MGeo model tools", description="Tools for real MGeo checkpoints.")
    mgeo_sub = mgeo.add_subparsers(dest="mgeo_command", required=True, metavar="COMMAND")
    convert = mgeo_sub.add_parser(
        "convert",
        help="turn an MGeo text checkpoint into a plain transformers BERT directory",
        description="Rename MGeo's text-encoder weights to BERT's so the hf backend (batching, fp16, int8) "
        "serves real MGeo weights.",
        epilog="example:\n  geogate mgeo convert ~/models/mgeo-base /models/mgeo-bert\n"
        "  geogate node --model /models/mgeo-bert",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("src", type=Path, help="MGeo model directory (ModelScope layout)")
    convert.add_argument("dst", type=Path, help="output directory (must not exist or be empty)")
    convert.set_defaults(run=_convert)


def _convert(args: argparse.Namespace) -> int:
    from geogate.node.mgeo_convert import ConversionError, convert

    try:
        convert(args.src, args.dst)
    except (ConversionError, FileNotFoundError) as exc:
        print(f"geogate mgeo convert: {exc}", file=sys.stderr)
        return 2
    print(f"converted {args.src} -> {args.dst}")
    return 0
