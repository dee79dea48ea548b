"""The gateway process: both planes assembled on one start-up / serve / shutdown shape.

Start-up, in order: the stores; the registry watcher; the HTTP clients; the nodes (probes,
outlier detection, discovery); the data plane; the heartbeat; the control plane; the
listeners. Each step registers how to stop what it started, so shutdown (on SIGTERM or
SIGINT, or a failed start-up step) runs the other way round: the listeners stop
accepting and let in-flight calls finish within ``drain_timeout_s``, then everything
else closes, down to the stores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import aiohttp
import msgspec
from aiohttp import web

from geogate.gateway.access.callers import Access
from geogate.gateway.access.limits import Limiter
from geogate.gateway.app import create_app
from geogate.gateway.config import GatewayConfig
from geogate.gateway.control.admin import Admin
from geogate.gateway.control.auth import TokenBook
from geogate.gateway.control.drills import Drills
from geogate.gateway.control.prechecks import load_golden
from geogate.gateway.control.roster import Roster
from geogate.gateway.control.view import GatewayView
from geogate.gateway.control.watch import SwitchWatch
from geogate.gateway.dataplane.cache import ResultCache
from geogate.gateway.dataplane.geo import GeoResolver
from geogate.gateway.dataplane.geoip_build import default_output
from geogate.gateway.dataplane.http1 import Http1Pool
from geogate.gateway.dataplane.pipeline import DataPlane
from geogate.gateway.dataplane.upstream import Upstream
from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.gateway.ops.stats import StatsBook
from geogate.gateway.routing.balancer import Balancer
from geogate.gateway.routing.discovery import NodeDiscovery
from geogate.gateway.routing.nodes import NodeSet
from geogate.gateway.routing.outliers import OutlierDetector
from geogate.gateway.routing.probes import HealthProbes
from geogate.gateway.routing.topology import Topology
from geogate.shared.clients import load_clients_file
from geogate.shared.heartbeats import GatewayHeartbeat, HeartbeatPublisher, Heartbeats, NodeHeartbeat
from geogate.shared.http import AppRunner
from geogate.shared.lifecycle import Service, Step, cancel
from geogate.shared.networks import parse_networks
from geogate.shared.registry import Registry, RegistryWatcher
from geogate.shared.store import Stores, open_stores

__all__ = ["GatewayServer", "serve"]

log = logging.getLogger("geogate.gateway")

NODE_REFRESH_S = 2.0
TOP_CLIENTS = 10  # calling services per gateway heartbeat (the admin status and dashboard list them)


class GatewayServer(Service):
    def __init__(self, config: GatewayConfig, topology: Topology, *, stores: Stores | None = None) -> None:
        """``stores`` given: the caller owns them (the local launcher runs several gateways
        in one process around one embedded store) and they stay open."""
        super().__init__()
        self.config = config
        self.topology = topology
        self.given_stores = stores
        self.metrics = GatewayMetrics()
        self.stats = StatsBook()
        self.server_ssl = _server_ssl(config)  # a bad certificate fails here, before anything started
        self.url = f"{'https' if self.server_ssl else 'http'}://{config.host}:{config.port}"

    def steps(self) -> list[tuple[str, Step]]:
        return [("stores", self._open_stores), ("registry", self._watch_registry), ("clients", self._open_clients),
                ("nodes", self._find_nodes), ("data plane", self._build_data_plane),
                ("heartbeat", self._prepare_heartbeat), ("control plane", self._build_control_plane),
                ("listeners", self._listen), ("announce", self._announce)]

    # -- start-up steps, in order ----------------------------------------------------------

    async def _open_stores(self, stack: AsyncExitStack) -> None:
        store = self.config.store
        if self.given_stores is not None:
            self.stores = self.given_stores
        else:
            self.stores = open_stores(store.registry_url, store.cache_url, store.cache_read_url)
            stack.push_async_callback(self.stores.close)

    async def _watch_registry(self, stack: AsyncExitStack) -> None:
        self.watcher = RegistryWatcher(Registry(self.stores.registry, namespace=self.config.store.namespace))
        stack.push_async_callback(self.watcher.close)
        await self.watcher.start()

    async def _open_clients(self, stack: AsyncExitStack) -> None:
        """aiohttp for probes and the golden set (a low rate, a full client); the small
        HTTP/1.1 pool for client calls."""
        ca = self.config.upstream.upstream_ca
        client_ssl = ssl.create_default_context(cafile=ca) if ca else None
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ssl=client_ssl if client_ssl else True)
        self.session = aiohttp.ClientSession(connector=connector)
        stack.push_async_callback(self.session.close)
        self.pool = Http1Pool(ssl_context=client_ssl,
                              connect_timeout_s=self.config.upstream.connect_timeout_ms / 1000)
        stack.push_async_callback(self.pool.close)

    async def _find_nodes(self, stack: AsyncExitStack) -> None:
        health = self.config.health
        self.nodes = NodeSet(self.metrics)
        self.probes = HealthProbes(health, self.nodes, self.session, self.metrics)
        stack.push_async_callback(self.probes.close)
        self.outliers = OutlierDetector(health, self.nodes, self.metrics)
        self.balancer = Balancer(self.topology, self.nodes)
        self.node_beats: Heartbeats[NodeHeartbeat] = Heartbeats(self.stores.registry,
                                                                 namespace=self.config.store.namespace)
        discovery = NodeDiscovery(self.topology, self.node_beats, self.probes, self.balancer,
                                  parse_networks(health.node_networks))
        await discovery.refresh()
        refresher = asyncio.create_task(discovery.keep_refreshing(NODE_REFRESH_S), name="node-refresh")
        stack.push_async_callback(cancel, refresher)

    async def _build_data_plane(self, stack: AsyncExitStack) -> None:
        cfg = self.config
        geoip_db = cfg.geo.geoip_db or (str(default_output()) if default_output().is_file() else None)
        log.info("GeoIP database: %s", geoip_db or "none (every client is in the default region)")
        geo = GeoResolver(db_path=geoip_db, countries=self.topology.countries, default_region=cfg.home_default,
                          trusted_proxies=parse_networks(cfg.geo.trusted_proxies),
                          cdn_country_header=cfg.geo.cdn_country_header)
        stack.callback(geo.close)
        clients_file = cfg.access.clients_file
        access = Access(cfg.access, cfg.region, self.watcher, load_clients_file(clients_file) if clients_file else {})
        if access.anonymous is not None:
            log.warning("anonymous access is on: calls without an API key or client certificate are served")
        cache = cfg.cache
        options = {"namespace": cfg.store.namespace, "ttl_s": cache.cache_ttl_s, "local_items": cache.cache_local_items}
        caching = cache.cache_ttl_s > 0
        self.plane = DataPlane(
            region=cfg.region, requests=cfg.requests, geo=geo, watcher=self.watcher, balancer=self.balancer,
            upstream=Upstream(cfg.upstream, self.pool, self.outliers, self.metrics), metrics=self.metrics,
            similarity_cache=ResultCache.for_similarity(self.stores.cache, **options) if caching else None,
            parse_cache=ResultCache.for_parse(self.stores.cache, **options) if caching else None,
            access=access,
            limiter=Limiter(self.stores.registry, cfg.store.namespace, self.metrics,
                            fallback_factor=cfg.access.limit_fallback_factor),
            hit_cost=cfg.access.cache_hit_cost, rate_headers_always=cfg.access.rate_limit_headers == "always",
            stats=self.stats,
        )

    async def _prepare_heartbeat(self, stack: AsyncExitStack) -> None:
        """Says which epoch this gateway serves by (a switch waits for it) and its traffic;
        published once the listeners are up."""
        cfg = self.config
        started = datetime.now(UTC).isoformat(timespec="seconds")
        stats, watcher = self.stats, self.watcher

        def beat() -> GatewayHeartbeat:
            recent = {name: stats.snapshot(name, 10) for name in sorted(stats.series)}
            clients = sorted((name for name in recent if name.startswith("client:")), key=lambda n: -recent[n].count)
            for name in clients[TOP_CLIENTS:]:  # the busiest clients only: a heartbeat stays small
                del recent[name]
            return GatewayHeartbeat(cfg.region, self.url, os.getpid(), started, watcher.snapshot.epoch,
                                    msgspec.to_builtins(recent))

        beats = Heartbeats.gateways(self.stores.registry, cfg.store.namespace, cfg.admin.heartbeat_ttl_s)
        self.publisher = publisher = HeartbeatPublisher(beats, beat(), refresh=beat)
        watcher.on_change(lambda record: publisher.update(now=True))  # acknowledge a new epoch at once
        stack.push_async_callback(publisher.stop)

    async def _build_control_plane(self, stack: AsyncExitStack) -> None:
        cfg, watcher, publisher = self.config, self.watcher, self.publisher
        access = self.plane.access

        async def set_state(region: str, state: str, who: str, why: str) -> None:
            record = await watcher.registry.set_region_state(region, state, who=who, why=why)
            await watcher.apply(record)
            publisher.update(now=True)

        async def node_pids(region: str) -> list[int]:
            local = ("127.", "localhost", "[::1]")
            return [b.pid for b in await self.node_beats.live()
                    if b.region == region and b.pid and b.url.split("://", 1)[-1].startswith(local)]

        drills = Drills(self.stats, f"{cfg.region} pid {os.getpid()}", can_kill=cfg.admin.drill_kill,
                        set_state=set_state, node_pids=node_pids)
        self.plane.call_observers.append(drills.observe_call)
        view = GatewayView(
            region=cfg.region, watcher=watcher, nodes=self.nodes, balancer=self.balancer,
            stats=self.stats, locate=self.plane.geo.locate, clients=access.clients,
            anonymous=access.anonymous is not None, default_limits=access.defaults)
        watch = SwitchWatch(watcher, self.stats, cfg.admin)
        stack.callback(watch.stop)
        self.admin = admin = Admin(
            view=view, settings=cfg.admin, tokens=TokenBook.load(cfg.admin.admin_tokens_file),
            gateways=Roster(publisher.heartbeats), session=self.session,
            golden=load_golden(cfg.admin.golden_file), watch=watch, drills=drills,
            publish_now=lambda: publisher.update(now=True),
        )
        watcher.on_change(lambda record: admin.changed())  # event streams send at once
        roster = asyncio.create_task(admin.gateways.keep_reading(NODE_REFRESH_S), name="gateway-roster")
        stack.push_async_callback(cancel, roster)

    async def _listen(self, stack: AsyncExitStack) -> None:
        """The client API on ``port``; the admin API there too, or on ``admin_port`` alone
        (a network policy can then fence it off)."""
        cfg = self.config
        admin_port = cfg.admin.admin_port
        apps = [(cfg.port, create_app(self.plane, None if admin_port else self.admin, access_log=cfg.access_log))]
        if admin_port:
            apps.append((admin_port, create_app(self.plane, self.admin, scoring=False, access_log=cfg.access_log)))
        for port, app in apps:
            runner = AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=cfg.drain_timeout_s)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)  # stops accepting, waits for in-flight handlers
            site = web.TCPSite(runner, cfg.host, port, ssl_context=self.server_ssl, backlog=2048, reuse_port=True)
            await site.start()

    async def _announce(self, stack: AsyncExitStack) -> None:
        cfg, publisher = self.config, self.publisher
        publisher.start()

        def draining() -> None:  # the first thing shutdown does: switches stop waiting for this gateway
            log.info("stopping: draining (up to %.0f s)", cfg.drain_timeout_s)
            publisher.update(msgspec.structs.replace(publisher.beat, state="draining"), now=True)

        stack.callback(draining)
        admin = f"port {cfg.admin.admin_port}" if cfg.admin.admin_port else "on the same port"
        log.info("gateway for region %s listening on %s (admin %s; store %s, %d configured nodes)", cfg.region,
                 self.url, admin, self.stores.registry.name, len(self.topology.nodes))


def _server_ssl(config: GatewayConfig) -> ssl.SSLContext | None:
    if not (config.tls_cert and config.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.access.client_ca:  # mutual TLS: a certificate is optional (keys still work) but must verify
        context.load_verify_locations(config.access.client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def serve(config: GatewayConfig, topology: Topology, *, stores: Stores | None = None,
                stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT, or until ``stop`` is set when the caller passes one
    (then the caller handles signals)."""
    server = GatewayServer(config, topology, stores=stores)
    if stop is not None:
        server.should_exit = stop
    code = await server.serve(handle_signals=stop is None)
    log.info("stopped")
    return code
