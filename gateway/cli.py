"""``geogate gateway``: run one gateway process."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys

from gateway.topology import Topology, load_topology
from shared.config import ConfigError, GatewayConfig, add_arguments, build_config
from shared.logs import setup_logging
from shared.runtime import run as run_service

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
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "run", "command")}
    try:
        config = build_config(GatewayConfig, section="gateway", file=args.config, overrides=overrides)
        topology = load_topology(args.config)
    except ConfigError as exc:
        print(f"geogate gateway: {exc}", file=sys.stderr)
        return 2
    workers = []
    if config.workers > 1:
        # Every worker binds the same port with SO_REUSEPORT and the kernel spreads
        # connections; each is a full gateway (own watcher, probes, pool and metrics).
        spawn = multiprocessing.get_context("spawn")
        workers = [spawn.Process(target=_serve, args=(config, topology), name=f"gateway-worker-{i}")
                   for i in range(1, config.workers)]
        for worker in workers:
            worker.start()
    code = _serve(config, topology)
    for worker in workers:  # the first worker got the signal: pass it on, then wait
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(config.drain_timeout_s + 5)
        if worker.is_alive():
            worker.kill()
    logging.shutdown()
    return code


def _serve(config: GatewayConfig, topology: Topology) -> int:
    setup_logging(config.log_level, json_lines=config.log_format == "json", region=config.region, service="gateway",
                  pid=str(os.getpid()))
    from gateway.server import serve

    return run_service(serve(config, topology))
