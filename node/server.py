"""The node process on the start-up / serve / shutdown shape (``shared.lifecycle``).

Start-up: the service, then the listener (``/health/live`` answers at once and
``/health/ready`` says 503 while the model loads), then the model load in the background.
The main loop waits for the load and, once the model serves, publishes the heartbeat;
it ends on SIGTERM or SIGINT, or with a non-zero code when the model cannot load.
Shutdown runs the other way round: the heartbeat goes first (gateways stop sending new
work), then queued work drains within ``drain_timeout_s`` (new calls get 503), then the
listener and the model's threads close.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from contextlib import AsyncExitStack
from datetime import UTC, datetime

from aiohttp import web

from geogate.node.app import create_app
from geogate.node.config import NodeConfig
from geogate.node.identity import ChecksumMismatch
from geogate.node.metrics import NodeMetrics
from geogate.node.service import NodeService
from geogate.shared.heartbeats import HeartbeatPublisher, Heartbeats, NodeHeartbeat
from geogate.shared.http import AppRunner
from geogate.shared.lifecycle import Service, Step, cancel
from geogate.shared.store import open_store

__all__ = ["EXIT_BAD_MODEL", "EXIT_LOAD_FAILED", "NodeServer", "serve"]

log = logging.getLogger("geogate.node")

EXIT_LOAD_FAILED = 1
EXIT_BAD_MODEL = 3  # the weights are not the ones --expect-sha256 names: do not restart blindly


class NodeServer(Service):
    def __init__(self, config: NodeConfig) -> None:
        super().__init__()
        self.config = config
        self.url = config.advertise_url or f"{'https' if config.tls_cert else 'http'}://{config.host}:{config.port}"
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")

    def steps(self) -> list[tuple[str, Step]]:
        return [("service", self._create_service), ("listener", self._listen), ("model", self._load_model)]

    async def _create_service(self, stack: AsyncExitStack) -> None:
        self.service = NodeService(self.config, NodeMetrics())
        stack.push_async_callback(self.service.close)

    async def _listen(self, stack: AsyncExitStack) -> None:
        cfg = self.config
        runner = AppRunner(create_app(self.service), access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        server_ssl = None
        if cfg.tls_cert and cfg.tls_key:
            server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ssl.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        await web.TCPSite(runner, cfg.host, cfg.port, ssl_context=server_ssl, backlog=2048).start()
        log.info("listening on %s://%s:%d (region %s, color %s)", "https" if server_ssl else "http", cfg.host,
                 cfg.port, cfg.region, cfg.color)

    async def _load_model(self, stack: AsyncExitStack) -> None:
        self.loading = asyncio.create_task(self.service.start(), name="node-start")
        stack.push_async_callback(cancel, self.loading)
        stack.push_async_callback(self._drain)  # before the listener closes: accepted work finishes
        self.stack = stack

    async def _drain(self) -> None:
        log.info("draining (up to %.0f s)", self.config.drain_timeout_s)
        if not await self.service.drain(self.config.drain_timeout_s):
            log.warning("drain timed out; unfinished calls are answered 503")

    async def main_loop(self) -> int:
        stop = asyncio.create_task(self.should_exit.wait(), name="node-stop")
        try:
            await asyncio.wait({self.loading, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if self.loading.done() and (exc := self.loading.exception()) is not None:
            log.error("model failed to load: %s", exc, exc_info=exc)
            return EXIT_BAD_MODEL if isinstance(exc, ChecksumMismatch) else EXIT_LOAD_FAILED
        if self.loading.done():
            await self._start_heartbeat()
        await self.should_exit.wait()
        log.info("signal received: stopping")
        return 0

    async def _start_heartbeat(self) -> None:
        cfg, model = self.config, self.service.model
        if not cfg.registry_url or model is None:
            return
        beat = NodeHeartbeat(region=cfg.region, color=cfg.color, url=self.url, model_version=model.model_version,
                             sha256=model.checksum, started_at=self.started_at, pid=os.getpid())
        store = open_store(cfg.registry_url)
        self.stack.push_async_callback(store.close)
        publisher = HeartbeatPublisher(Heartbeats(store, ttl_s=cfg.heartbeat_ttl_s), beat)
        publisher.start()
        self.stack.push_async_callback(publisher.stop)  # the first thing shutdown does
        log.info("publishing heartbeats to %s every %.1f s", store.name, cfg.heartbeat_ttl_s / 3)


async def serve(config: NodeConfig) -> int:
    code = await NodeServer(config).serve()
    log.info("stopped")
    return code
