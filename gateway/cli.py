"""``geogate gateway`` (run one gateway process) and ``geogate geoip`` (GeoIP database
tools), registered as entry points of the ``geogate`` command."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from pathlib import Path

from geogate.gateway.config import GatewayConfig
from geogate.gateway.routing.topology import Topology, load_topology
from geogate.shared.config import ConfigError, add_arguments, build_config
from geogate.shared.logs import setup_logging
from geogate.shared.runtime import run as run_service

__all__ = ["add_geoip_parser", "add_parser"]

GATEWAY_EXAMPLES = """\
examples:
  geogate gateway --config gateway.yaml
  geogate gateway --config gateway.yaml --region eu-central --port 8443 --tls-cert cert.pem --tls-key key.pem
  GEOGATE_REGISTRY_URL=redis://redis:6379/0 geogate gateway --config gateway.yaml --allow-anonymous

The file's gateway: section holds these settings (grouped in the sections below); its
top-level regions:, countries: and nodes: describe the topology (docs/configuration.md).
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run a gateway",
        description="Route address-model calls by client region to healthy nodes of the active color. "
        "Every flag can also be set as GEOGATE_<FLAG> or in --config FILE.",
        epilog=GATEWAY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    from geogate.gateway.server import serve

    return run_service(serve(config, topology))


def add_geoip_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from geogate.gateway.dataplane.geoip_build import default_output

    geoip = subparsers.add_parser("geoip", help="GeoIP database tools",
                                  description="Databases that place a client address in a country.")
    geoip_sub = geoip.add_subparsers(dest="geoip_command", required=True, metavar="COMMAND")
    build = geoip_sub.add_parser(
        "build",
        help="build an offline country .mmdb from Debian's tor-geoipdb (IPFire Location data, CC BY-SA 4.0)",
        description="Convert the IP ranges of Debian's tor-geoipdb package (apt-get install tor-geoipdb) into a "
        "MaxMind-format country database the gateway reads. Data: IPFire Location, CC BY-SA 4.0. Gateways and "
        "geogate up use it by default once it exists.",
        epilog="example:\n  apt-get install tor-geoipdb && geogate geoip build",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--source", type=Path, default=Path("/usr/share/tor"),
                       help="folder with geoip and geoip6 (default: %(default)s)")
    build.add_argument("--out", type=Path, default=default_output(), help="output file (default: %(default)s)")
    build.set_defaults(run=_geoip_build)


def _geoip_build(args: argparse.Namespace) -> int:
    from geogate.gateway.dataplane.geoip_build import ATTRIBUTION, build

    v4, v6 = args.source / "geoip", args.source / "geoip6"
    if not v4.is_file():
        print(f"geogate geoip build: {v4} not found; install Debian's tor-geoipdb (apt-get install tor-geoipdb) "
              "or pass --source", file=sys.stderr)
        return 2
    try:
        stats = build(v4, v6 if v6.is_file() else None, args.out, lambda line: print(line, flush=True))
    except ValueError as exc:
        print(f"geogate geoip build: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {stats.output}: {stats.countries} countries, {stats.networks} networks from {stats.ranges} ranges "
          f"in {stats.seconds:.0f}s\ndata: {ATTRIBUTION}")
    return 0
