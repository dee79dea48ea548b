"""Regions, their failover order and residency limits, the country map, and the nodes.

Read from the gateway's YAML file (top-level ``regions:``, ``countries:``, ``nodes:``):

    regions:
      cn-east:    {failover: [ap-southeast, eu-central], residency: ["cn-*"]}
      eu-central: {failover: [us-east, ap-southeast], min_healthy: 1}
    countries: {CN: cn-east, GB: eu-central, US: us-east}
    nodes:
      - {region: cn-east, color: blue, url: "http://10.0.0.5:8081"}

``residency`` lists the regions (glob patterns) a region's clients may be served from;
empty means anywhere. The configured nodes are merged with live heartbeats
(``shared.heartbeats.merge_topology``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from geogate.shared.config import ConfigError, read_yaml
from geogate.shared.networks import IPNetwork

__all__ = ["NodeSpec", "RegionSpec", "Topology", "load_topology", "refuse_node_url"]


@dataclass(frozen=True, slots=True)
class RegionSpec:
    name: str
    failover: tuple[str, ...] = ()
    residency: tuple[str, ...] = ()  # glob patterns of regions allowed to serve; () = any
    min_healthy: int = 1  # below this many healthy nodes, traffic spills to the next region

    def allows(self, region: str) -> bool:
        return not self.residency or any(fnmatch.fnmatchcase(region, p) for p in self.residency)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    region: str
    color: str
    url: str


@dataclass(frozen=True)
class Topology:
    regions: dict[str, RegionSpec] = field(default_factory=dict)
    countries: dict[str, str] = field(default_factory=dict)  # ISO country -> region
    nodes: tuple[NodeSpec, ...] = ()

    def region(self, name: str) -> RegionSpec:
        return self.regions.get(name) or RegionSpec(name)

    def order(self, home: str) -> list[str]:
        """Home first, then its failover list, each region once."""
        out = [home]
        for name in self.region(home).failover:
            if name not in out:
                out.append(name)
        return out

    def with_regions(self, names: Iterable[str]) -> Topology:
        """Regions only known from heartbeats get a default spec."""
        regions = dict(self.regions)
        for name in names:
            regions.setdefault(name, RegionSpec(name))
        return Topology(regions, self.countries, self.nodes)


def refuse_node_url(url: str, networks: tuple[IPNetwork, ...]) -> str:
    """Why a self-registered node URL is refused, or ''. Anyone who can write to the store
    could register a node; limiting URLs to plain IP addresses in the deployment's own
    networks keeps the gateway from being pointed at arbitrary hosts (request forgery)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http or https"
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        return "a node URL is scheme://address:port and nothing else"
    try:
        ip = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return f"host {parts.hostname!r} is not an IP address (name nodes in the gateway's config instead)"
    if not any(ip in net for net in networks):
        return f"address {ip} is outside node_networks"
    try:
        if parts.port is None:
            return "no port"
    except ValueError:
        return "bad port"
    return ""


def load_topology(path: Path | None) -> Topology:
    if path is None:
        return Topology()
    return parse_topology(read_yaml(path), str(path))


def parse_topology(data: dict[str, Any], where: str = "config") -> Topology:
    regions: dict[str, RegionSpec] = {}
    for name, spec in (data.get("regions") or {}).items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: regions.{name} must be a mapping")
        unknown = set(spec) - {"failover", "residency", "min_healthy"}
        if unknown:
            raise ConfigError(f"{where}: regions.{name}: unknown keys {sorted(unknown)}")
        regions[str(name)] = RegionSpec(
            str(name),
            tuple(str(r) for r in spec.get("failover") or ()),
            tuple(str(r) for r in spec.get("residency") or ()),
            int(spec.get("min_healthy", 1)),
        )
    for spec in regions.values():
        missing = [r for r in spec.failover if r not in regions]
        if missing:
            raise ConfigError(f"{where}: regions.{spec.name}.failover names unknown regions {missing}")
    countries = {str(k).upper(): str(v) for k, v in (data.get("countries") or {}).items()}
    nodes = []
    for i, node in enumerate(data.get("nodes") or ()):
        try:
            nodes.append(NodeSpec(str(node["region"]), str(node["color"]), str(node["url"]).rstrip("/")))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: nodes[{i}] needs region, color and url") from exc
    return Topology(regions, countries, tuple(nodes))
