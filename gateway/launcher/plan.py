"""What `geogate up` will run: regions, nodes per color, gateways and their ports.

Read from a topology file (``topology.yaml`` beside this module by default: a gateway
config file with a ``launcher:`` section), narrowed by the command line. Building a plan starts
nothing, so it is checked whole (unknown regions, busy ports) before any process runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geogate.gateway.config import GatewayConfig
from geogate.gateway.routing.topology import parse_topology
from geogate.shared.config import ConfigError, nested, read_yaml

__all__ = ["DEFAULT_TOPOLOGY", "GEOGATE", "TEST_GEOIP_DB", "GatewayPlan", "LaunchPlan", "NodePlan", "build_plan",
           "sample_client_ip"]

# The `geogate` command as this Python runs it. Nodes and gateways are started by their
# command line, never imported: the launcher composes the two services from above. The
# module's name in a process's command line also tells the launcher's own processes
# apart from others that reuse a pid.
GEOGATE = [sys.executable, "-m", "geogate.shared.cli"]

# Both ship in the package, so an installed geogate runs its own demo.
DEFAULT_TOPOLOGY = Path(__file__).with_name("topology.yaml")
TEST_GEOIP_DB = Path(__file__).parent / "geoip" / "GeoIP2-Country-Test.mmdb"  # MaxMind's, with its licenses
NODE_PORT_OFFSET = 100  # nodes from port_base + 100, gateways from port_base

# Client addresses a curl can claim to stand for (X-Forwarded-For), tried in order: the
# first that the GeoIP database in use places in a region is shown for that region.
# MaxMind's test database first, then well-known addresses for a real database.
_SAMPLE_IPS = (
    "111.235.160.1", "114.114.114.114", "223.5.5.5",  # CN
    "202.196.224.1", "2001:218::1", "1.0.16.1", "8.8.4.4",  # PH, JP, JP, ...
    "89.160.20.113", "2.125.160.217", "193.99.144.80",  # SE, GB, DE
    "50.114.0.1", "8.8.8.8", "4.2.2.2",  # US
)


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str
    region: str
    color: str
    model: str
    port: int


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    region: str
    port: int


@dataclass(frozen=True)
class LaunchPlan:
    regions: tuple[str, ...]
    colors: dict[str, str]  # color -> model ("demo", a directory, a hub id)
    active: str
    nodes: tuple[NodePlan, ...]
    gateways: tuple[GatewayPlan, ...]
    node_settings: dict[str, Any] = field(default_factory=dict)  # NodeConfig fields for every node
    gateway_settings: dict[str, Any] = field(default_factory=dict)  # the file's gateway: section, as written
    topology: dict[str, Any] = field(default_factory=dict)  # regions: and countries:, narrowed
    host: str = "127.0.0.1"

    def gateway_file(self, scheme: str, extra: dict[str, Any]) -> dict[str, Any]:
        """The config file every gateway of this plan reads (nodes listed statically, so
        gateways find them even where nodes cannot register by heartbeat), with the
        settings ``extra`` names (flat) added in their sections."""
        settings = {key: dict(value) if isinstance(value, dict) else value
                    for key, value in self.gateway_settings.items()}
        for key, value in nested(GatewayConfig, extra).items():
            settings[key] = {**settings.get(key, {}), **value} if isinstance(value, dict) else value
        return {
            "gateway": settings,
            **self.topology,
            "nodes": [{"region": n.region, "color": n.color, "url": f"{scheme}://{self.host}:{n.port}"}
                      for n in self.nodes],
        }


def build_plan(config: Path, *, regions: Sequence[str] | None = None, nodes_per_color: int | None = None,
               port_base: int = 8080, host: str = "127.0.0.1") -> LaunchPlan:
    data = read_yaml(config)
    launcher = data.get("launcher") or {}
    known = parse_topology(data, str(config))  # validates regions:, countries:
    if not known.regions:
        raise ConfigError(f"{config}: no regions")
    chosen = tuple(regions) if regions else tuple(known.regions)
    unknown = [r for r in chosen if r not in known.regions]
    if unknown:
        raise ConfigError(f"unknown regions {unknown}; {config} has {sorted(known.regions)}")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"a region is named twice in {list(chosen)}")
    colors = {str(c): str(m) for c, m in (launcher.get("colors") or {"blue": "demo", "green": "demo-v2"}).items()}
    active = str(launcher.get("active", "blue"))
    if active not in colors:
        raise ConfigError(f"{config}: launcher.active {active!r} is not one of the colors {sorted(colors)}")
    per_color = nodes_per_color if nodes_per_color is not None else int(launcher.get("nodes_per_color", 1))
    if per_color < 1:
        raise ConfigError("nodes per color must be at least 1")

    names = [(r, c, i) for r in chosen for c in colors for i in range(1, per_color + 1)]
    ports = list(_ports(host, port_base, len(chosen), len(names)))
    gateways = tuple(GatewayPlan(r, p) for r, p in zip(chosen, ports))
    nodes = tuple(NodePlan(f"{r}-{c}-{i}", r, c, colors[c], p) for (r, c, i), p in zip(names, ports[len(chosen):]))

    # failover lists and the region table keep only the regions that run
    region_table = {
        name: {**(data["regions"][name] or {}),
               "failover": [f for f in known.regions[name].failover if f in chosen]}
        for name in chosen
    }
    return LaunchPlan(
        regions=chosen, colors=colors, active=active, nodes=nodes, gateways=gateways,
        node_settings=dict(launcher.get("node") or {}), gateway_settings=dict(data.get("gateway") or {}),
        topology={"regions": region_table, "countries": dict(data.get("countries") or {})}, host=host,
    )


def _ports(host: str, base: int, gateways: int, nodes: int) -> Iterator[int]:
    """Gateways at base, base+1, ...; nodes from base+100. Base 0: free ports from the OS."""
    if base == 0:
        with contextlib.ExitStack() as held:  # hold each until all are picked: no duplicates
            for _ in range(gateways + nodes):
                s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                s.bind((host, 0))
                yield int(s.getsockname()[1])
        return
    wanted = [base + i for i in range(gateways)] + [base + NODE_PORT_OFFSET + i for i in range(nodes)]
    busy = [p for p in wanted if not _free(host, p)]
    if busy:
        raise ConfigError(f"ports in use on {host}: {busy} (pass another --port-base, or 0 for any free ports)")
    yield from wanted


def _free(host: str, port: int) -> bool:
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def sample_client_ip(region: str, countries: dict[str, str], geoip_db: str | None) -> str | None:
    """An address the GeoIP database in use places in ``region``, for the README-style curls."""
    if not geoip_db:
        return None
    from geogate.gateway.dataplane.geo import GeoResolver

    geo = GeoResolver(db_path=geoip_db, countries=countries, default_region="")
    try:
        for text in _SAMPLE_IPS:
            if countries.get(geo.country(ipaddress.ip_address(text)) or "") == region:
                return text
    finally:
        geo.close()
    return None
