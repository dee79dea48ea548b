"""A two-region deployment for admin API and dashboard tests: blue (demo) and green
(demo-v2) nodes in eu-central and us-east, real Redis, two gateways, and tokens for a
viewer, an operator and an admin."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from helpers import GatewayProcess, NodeProcess, RedisSentinel, RedisServer, free_port, seed_registry_from

from geogate.gateway.config import GatewayConfig
from geogate.gateway.control.auth import hash_token
from geogate.gateway.launcher.plan import TEST_GEOIP_DB
from geogate.shared.config import nested

PROXY = Path(__file__).parent / "chaos" / "tcp_proxy.py"
GEOIP = TEST_GEOIP_DB  # MaxMind's test database, shipped for geogate up
EU, US = "89.160.20.113", "50.114.0.1"  # SE and US in MaxMind's test database
TOKENS = {"viewer": "vera-token-0123456789abcdef", "operator": "otto-token-0123456789abcdef",
          "admin": "ada-token-0123456789abcdef"}
NAMES = {"viewer": "vera", "operator": "otto", "admin": "ada"}


@dataclass
class World:
    redis: RedisServer
    nodes: dict[str, NodeProcess]
    a: GatewayProcess  # eu-central
    b: GatewayProcess  # us-east
    config: Path
    tmp: Path
    versions: dict[str, tuple[str, str]]  # color -> (version, checksum)
    store_url: str = ""  # what nodes and gateways use: the primary's URL, or Sentinel's
    replica: RedisServer | None = None  # with sentinel=True

    def fail_file(self, name: str) -> Path:
        """While it exists, node ``name`` (``eu-central-green``) answers 500."""
        return self.tmp / f"{name}.fail"

    def slow_file(self, name: str) -> Path:
        """While it exists, node ``name`` takes 400 ms longer over every forward pass."""
        return self.tmp / f"{name}.slow"

    def cut_file(self, region: str) -> Path:
        """While it exists, the gateways cannot reach ``region``'s nodes (with ``proxied=region``)."""
        return self.tmp / f"{region}.cut"

    def go_file(self, name: str) -> Path:
        """While it is missing, node ``name`` holds every forward pass (it hangs)."""
        return self.tmp / f"{name}.go"


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@contextlib.contextmanager
def two_region_world(tmp: Path, *, proxied: str | None = None, sentinel: bool = False,
                     **gateway: object) -> Iterator[World]:
    """``proxied``: the gateways reach that region's nodes through TCP proxies
    (``tests/chaos/tcp_proxy.py``), so a test can cut the region off (``World.cut_file``).
    ``sentinel``: Redis is a primary, a replica and a Sentinel, and everything connects
    through Sentinel (``redis+sentinel://``), so the primary can fail over."""
    redis = RedisServer(tmp)
    replica = RedisServer(tmp, replica_of=redis) if sentinel else None
    watcher = RedisSentinel(tmp, redis) if sentinel else None
    store_url = watcher.url if watcher else redis.url
    nodes: dict[str, NodeProcess] = {}
    urls: dict[str, str] = {}  # what gateways use for each node
    proxies: list[subprocess.Popen[bytes]] = []
    gateways: list[GatewayProcess] = []
    try:
        for region in ("eu-central", "us-east"):
            for color, model in (("blue", "demo"), ("green", "demo-v2")):
                name = f"{region}-{color}"
                (tmp / f"{name}.go").touch()
                via: list[str] = []
                if region == proxied:
                    port = free_port()
                    urls[name] = f"http://127.0.0.1:{port}"
                    via = ["--advertise-url", urls[name]]  # its heartbeat names the proxy too
                nodes[name] = NodeProcess(tmp, "--region", region, "--color", color, "--model", model,
                                          "--registry-url", store_url, "--cpu-threads", "1",
                                          "--fault-fail-file", str(tmp / f"{name}.fail"),
                                          "--fault-hold-inference-file", str(tmp / f"{name}.go"),
                                          "--fault-delay-ms", "400", "--fault-slow-file", str(tmp / f"{name}.slow"),
                                          *via)
                if region == proxied:
                    proxies.append(subprocess.Popen([sys.executable, str(PROXY), str(port), str(nodes[name].port),
                                                     str(tmp / f"{region}.cut")]))
                urls.setdefault(name, nodes[name].url)
        versions = asyncio.run(seed_registry_from(store_url, list(nodes.values()), ["eu-central", "us-east"]))
        tokens = tmp / "tokens.yaml"
        tokens.write_text(yaml.safe_dump({"tokens": [{"name": NAMES[r], "role": r, "sha256": hash_token(t)}
                                                     for r, t in TOKENS.items()]}))
        config = tmp / "gateway.yaml"
        config.write_text(yaml.safe_dump({
            "gateway": nested(GatewayConfig, {"trusted_proxies": "127.0.0.0/8", "geoip_db": str(GEOIP), "probe_interval_s": 0.2,
                        "deep_probe_interval_s": 0, "cache_ttl_s": 0, "admin_tokens_file": str(tokens),
                        "watch_window_s": 20, "watch_min_calls": 10, "registry_url": store_url, **gateway}),
            "regions": {"eu-central": {"failover": ["us-east"]}, "us-east": {"failover": ["eu-central"]}},
            "countries": {"SE": "eu-central", "GB": "eu-central", "US": "us-east"},
            "nodes": [{"region": n.rsplit("-", 1)[0], "color": n.rsplit("-", 1)[1], "url": urls[n]} for n in nodes],
        }))
        gateways = [GatewayProcess(tmp, "--config", str(config), "--region", r) for r in ("eu-central", "us-east")]
        for gw in gateways:
            asyncio.run(gw.wait_ready())
        yield World(redis, nodes, gateways[0], gateways[1], config, tmp, versions, store_url, replica)
    finally:
        for process in [*gateways, *nodes.values()]:
            process.stop()
        for proxy in proxies:
            proxy.kill()
            proxy.wait(10)
        for server in (watcher, replica, redis):
            if server is not None:
                server.stop()


