"""The gateway process: stores, registry watcher, node set, health checks, HTTP(S) server.

On SIGTERM or SIGINT it stops accepting connections, lets in-flight calls finish within
``drain_timeout_s``, then closes its sessions and stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from datetime import UTC, datetime

import aiohttp
import msgspec
from aiohttp import web

from gateway.access import Access
from gateway.admin import Admin
from gateway.app import create_app
from gateway.auth import TokenBook
from gateway.balancer import Balancer
from gateway.cache import ResultCache
from gateway.drills import Drills
from gateway.geo import GeoResolver, IPNetwork, parse_networks
from gateway.geoip_build import default_output
from gateway.health import HealthChecker
from gateway.http1 import Http1Pool
from gateway.limits import Limiter
from gateway.metrics import GatewayMetrics
from gateway.prechecks import load_golden
from gateway.proxy import Gateway
from gateway.roster import Roster
from gateway.stats import StatsBook
from gateway.topology import NodeSpec, Topology, refuse_node_url
from gateway.upstream import Upstream
from gateway.watch import SwitchWatch
from shared.clients import load_clients_file
from shared.config import GatewayConfig
from shared.errors import StoreUnavailable
from shared.heartbeats import GatewayHeartbeat, HeartbeatPublisher, Heartbeats, NodeHeartbeat, merge_topology
from shared.http import AppRunner
from shared.registry import Registry, RegistryWatcher
from shared.store import Stores, open_stores

__all__ = ["serve"]

log = logging.getLogger("geogate.gateway")

NODE_REFRESH_S = 2.0
TOP_CLIENTS = 10  # calling services per gateway heartbeat (the admin status and dashboard list them)


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
    heartbeats: Heartbeats[NodeHeartbeat] = Heartbeats(stores.registry, namespace=config.namespace)
    networks = parse_networks(config.node_networks)
    await _refresh_nodes(topology, heartbeats, health, balancer, networks)
    refresher = asyncio.create_task(_keep_refreshing(topology, heartbeats, health, balancer, networks),
                                    name="node-refresh")
    caching = config.cache_ttl_s > 0
    options = {"namespace": config.namespace, "ttl_s": config.cache_ttl_s, "local_items": config.cache_local_items}
    geoip_db = config.geoip_db or (str(default_output()) if default_output().is_file() else None)
    log.info("GeoIP database: %s", geoip_db or "none (every client is in the default region)")
    geo = GeoResolver(db_path=geoip_db, countries=topology.countries, default_region=config.home_default,
                      trusted_proxies=parse_networks(config.trusted_proxies),
                      cdn_country_header=config.cdn_country_header)
    stats = StatsBook()
    access = Access(config, watcher, load_clients_file(config.clients_file) if config.clients_file else {})
    if access.anonymous is not None:
        log.warning("anonymous access is on: calls without an API key or client certificate are served")
    gateway = Gateway(
        config=config, geo=geo, watcher=watcher, balancer=balancer,
        upstream=Upstream(config, upstream_client, health, balancer, metrics), metrics=metrics,
        similarity_cache=ResultCache.for_similarity(stores.cache, **options) if caching else None,
        parse_cache=ResultCache.for_parse(stores.cache, **options) if caching else None,
        access=access,
        limiter=Limiter(stores.registry, config.namespace, metrics, fallback_factor=config.limit_fallback_factor),
        stats=stats,
    )
    server_ssl = None
    if config.tls_cert and config.tls_key:
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(config.tls_cert, config.tls_key)
        if config.client_ca:  # mutual TLS: a certificate is optional (keys still work) but must verify
            server_ssl.load_verify_locations(config.client_ca)
            server_ssl.verify_mode = ssl.CERT_OPTIONAL
    scheme = "https" if server_ssl else "http"
    own_url = f"{scheme}://{config.host}:{config.port}"
    publisher = _gateway_heartbeat(config, stores, watcher, stats, own_url)
    admin = _admin(config, gateway, stores, session, heartbeats, publisher)
    runners = [AppRunner(create_app(gateway, admin if not config.admin_port else None), access_log=None,
                             handle_signals=False, shutdown_timeout=config.drain_timeout_s)]
    if config.admin_port:  # the admin API on a port of its own (a network policy can then fence it off)
        runners.append(AppRunner(create_app(gateway, admin, scoring=False), access_log=None,
                                     handle_signals=False, shutdown_timeout=config.drain_timeout_s))
    for runner, port in zip(runners, (config.port, config.admin_port)):
        await runner.setup()
        site = web.TCPSite(runner, config.host, port, ssl_context=server_ssl, backlog=2048, reuse_port=True)
        await site.start()
    publisher.start()
    roster = asyncio.create_task(admin.gateways.keep_reading(NODE_REFRESH_S), name="gateway-roster")
    log.info("gateway for region %s listening on %s (admin %s; store %s, %d configured nodes)", config.region,
             own_url, f"port {config.admin_port}" if config.admin_port else "on the same port",
             stores.registry.name, len(topology.nodes))

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining (up to %.0f s)", config.drain_timeout_s)
    publisher.update(msgspec.structs.replace(publisher.beat, state="draining"), now=True)
    for runner in runners:
        await runner.cleanup()  # stops accepting, waits for in-flight handlers
    admin.watch.stop()
    with contextlib.suppress(StoreUnavailable):
        await publisher.stop(deregister=True)
    for task in (refresher, roster):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await health.close()
    await watcher.close()
    await session.close()
    await upstream_client.close()
    if own_stores:
        await stores.close()
    geo.close()
    log.info("stopped")
    return 0


def _gateway_heartbeat(config: GatewayConfig, stores: Stores, watcher: RegistryWatcher, stats: StatsBook,
                       url: str) -> HeartbeatPublisher[GatewayHeartbeat]:
    """Says which epoch this gateway serves by (a switch waits for it) and its traffic."""
    started = datetime.now(UTC).isoformat(timespec="seconds")

    def beat() -> GatewayHeartbeat:
        recent = {name: stats.snapshot(name, 10) for name in sorted(stats.series)}
        clients = sorted((name for name in recent if name.startswith("client:")), key=lambda n: -recent[n].count)
        for name in clients[TOP_CLIENTS:]:  # the busiest clients only: a heartbeat stays small
            del recent[name]
        return GatewayHeartbeat(config.region, url, os.getpid(), started, watcher.snapshot.epoch,
                                msgspec.to_builtins(recent))

    beats = Heartbeats.gateways(stores.registry, config.namespace, config.heartbeat_ttl_s)
    publisher = HeartbeatPublisher(beats, beat(), refresh=beat)
    watcher.on_change(lambda record: publisher.update(now=True))  # acknowledge a new epoch at once
    return publisher


def _admin(config: GatewayConfig, gateway: Gateway, stores: Stores, session: aiohttp.ClientSession,
           nodes: Heartbeats[NodeHeartbeat], publisher: HeartbeatPublisher[GatewayHeartbeat]) -> Admin:
    watcher = gateway.watcher

    async def set_state(region: str, state: str, who: str, why: str) -> None:
        record = await watcher.registry.set_region_state(region, state, who=who, why=why)
        await watcher.apply(record)
        publisher.update(now=True)

    async def node_pids(region: str) -> list[int]:
        local = ("127.", "localhost", "[::1]")
        return [b.pid for b in await nodes.live()
                if b.region == region and b.pid and b.url.split("://", 1)[-1].startswith(local)]

    drills = Drills(gateway.stats, f"{config.region} pid {os.getpid()}", can_kill=config.drill_kill,
                    set_state=set_state, node_pids=node_pids)
    gateway.drills = drills
    admin = Admin(
        tokens=TokenBook.load(config.admin_tokens_file), gateways=Roster(publisher.heartbeats), nodes=nodes,
        session=session, golden=load_golden(config.golden_file), watch=SwitchWatch(watcher, gateway.stats, config),
        drills=drills, publish_now=lambda: publisher.update(now=True),
    )
    watcher.on_change(lambda record: admin.changed())  # event streams send at once
    return admin


_refused: set[str] = set()  # node URLs already warned about


async def _refresh_nodes(topology: Topology, heartbeats: Heartbeats[NodeHeartbeat], health: HealthChecker,
                         balancer: Balancer, networks: tuple[IPNetwork, ...]) -> None:
    """Configured nodes plus live heartbeats from allowed addresses; a store that is down
    keeps the last set."""
    try:
        beats = await heartbeats.live()
    except StoreUnavailable:
        return
    configured = {n.url for n in topology.nodes}
    live = []
    for beat in beats:
        why = "" if beat.url.rstrip("/") in configured else refuse_node_url(beat.url, networks)
        if not why:
            live.append(beat)
        elif beat.url not in _refused:
            _refused.add(beat.url)
            log.warning("ignoring the heartbeat of node %r (%s %s): %s", beat.url[:200], beat.region, beat.color, why)
    merged = merge_topology(((n.region, n.color, n.url) for n in topology.nodes), live)
    health.sync(NodeSpec(n.region, n.color, n.url) for n in merged)  # URLs come normalized
    balancer.topology = topology.with_regions(n.region for n in merged)


async def _keep_refreshing(topology: Topology, heartbeats: Heartbeats[NodeHeartbeat], health: HealthChecker,
                           balancer: Balancer, networks: tuple[IPNetwork, ...]) -> None:
    while True:
        await asyncio.sleep(NODE_REFRESH_S)
        await _refresh_nodes(topology, heartbeats, health, balancer, networks)
