"""The gateway process: stores, registry watcher, node set, health checks, HTTP(S) server.

On SIGTERM or SIGINT it stops accepting connections, lets in-flight calls finish within
``drain_timeout_s``, then closes its sessions and stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.balancer import Balancer
from gateway.cache import ResultCache
from gateway.geo import GeoResolver, parse_networks
from gateway.geoip_build import default_output
from gateway.health import HealthChecker
from gateway.http1 import Http1Pool
from gateway.metrics import GatewayMetrics
from gateway.proxy import Gateway
from gateway.topology import NodeSpec, Topology
from gateway.upstream import Upstream
from shared.config import GatewayConfig
from shared.errors import StoreUnavailable
from shared.heartbeats import Heartbeats, merge_topology
from shared.registry import Registry, RegistryWatcher
from shared.store import Stores, open_stores

__all__ = ["serve"]

log = logging.getLogger("geogate.gateway")

NODE_REFRESH_S = 2.0


async def serve(config: GatewayConfig, topology: Topology, *, stores: Stores | None = None,
                stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT, or until ``stop`` is set when the caller passes one
    (the local launcher runs several gateways in one process around one embedded store;
    stores passed in stay open: their owner closes them)."""
    metrics = GatewayMetrics()
    own_stores = stores is None
    stores = stores or open_stores(config.registry_url, config.cache_url, config.cache_read_url)
    watcher = RegistryWatcher(Registry(stores.registry, namespace=config.namespace))
    await watcher.start()
    client_ssl = ssl.create_default_context(cafile=config.upstream_ca) if config.upstream_ca else None
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ssl=client_ssl if client_ssl else True)
    session = aiohttp.ClientSession(connector=connector)
    health = HealthChecker(config, session, metrics)  # probes: aiohttp (low rate, full client)
    upstream_client = Http1Pool(ssl_context=client_ssl, connect_timeout_s=config.connect_timeout_ms / 1000)
    balancer = Balancer(topology, health)
    heartbeats = Heartbeats(stores.registry, namespace=config.namespace)
    await _refresh_nodes(topology, heartbeats, health, balancer)
    refresher = asyncio.create_task(_keep_refreshing(topology, heartbeats, health, balancer), name="node-refresh")
    caching = config.cache_ttl_s > 0
    options = {"namespace": config.namespace, "ttl_s": config.cache_ttl_s, "local_items": config.cache_local_items}
    geoip_db = config.geoip_db or (str(default_output()) if default_output().is_file() else None)
    log.info("GeoIP database: %s", geoip_db or "none (every client is in the default region)")
    geo = GeoResolver(db_path=geoip_db, countries=topology.countries, default_region=config.home_default,
                      trusted_proxies=parse_networks(config.trusted_proxies),
                      cdn_country_header=config.cdn_country_header)
    gateway = Gateway(
        config=config, geo=geo, watcher=watcher, balancer=balancer,
        upstream=Upstream(config, upstream_client, health, balancer, metrics), metrics=metrics,
        similarity_cache=ResultCache.for_similarity(stores.cache, **options) if caching else None,
        parse_cache=ResultCache.for_parse(stores.cache, **options) if caching else None,
    )
    runner = web.AppRunner(create_app(gateway), access_log=None, handle_signals=False,
                           shutdown_timeout=config.drain_timeout_s)
    await runner.setup()
    server_ssl = None
    if config.tls_cert and config.tls_key:
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(config.tls_cert, config.tls_key)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=server_ssl, backlog=2048, reuse_port=True)
    await site.start()
    scheme = "https" if server_ssl else "http"
    log.info("gateway for region %s listening on %s://%s:%d (store %s, %d configured nodes)", config.region, scheme,
             config.host, config.port, stores.registry.name, len(topology.nodes))

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining (up to %.0f s)", config.drain_timeout_s)
    await runner.cleanup()  # stops accepting, waits for in-flight handlers
    refresher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await refresher
    await health.close()
    await watcher.close()
    await session.close()
    await upstream_client.close()
    if own_stores:
        await stores.close()
    geo.close()
    log.info("stopped")
    return 0


async def _refresh_nodes(topology: Topology, heartbeats: Heartbeats, health: HealthChecker,
                         balancer: Balancer) -> None:
    """Configured nodes plus live heartbeats; a store that is down keeps the last set."""
    try:
        live = await heartbeats.live()
    except StoreUnavailable:
        return
    merged = merge_topology(((n.region, n.color, n.url) for n in topology.nodes), live)
    health.sync(NodeSpec(n.region, n.color, n.url) for n in merged)  # URLs come normalized
    balancer.topology = topology.with_regions(n.region for n in merged)


async def _keep_refreshing(topology: Topology, heartbeats: Heartbeats, health: HealthChecker,
                           balancer: Balancer) -> None:
    while True:
        await asyncio.sleep(NODE_REFRESH_S)
        await _refresh_nodes(topology, heartbeats, health, balancer)
