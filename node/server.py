"""The node process: serve -> start (load, warm) -> main loop -> shutdown (drain).

On SIGTERM or SIGINT the node stops taking new work (readiness 503, new calls 503),
finishes every accepted request within ``drain_timeout_s``, then closes the listener.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from datetime import UTC, datetime

from aiohttp import web

from node.app import create_app
from node.identity import ChecksumMismatch
from node.metrics import NodeMetrics
from node.service import NodeService
from shared.config import NodeConfig
from shared.heartbeats import HeartbeatPublisher, Heartbeats, NodeHeartbeat
from shared.http import AppRunner
from shared.store import open_store

__all__ = ["EXIT_BAD_MODEL", "EXIT_LOAD_FAILED", "serve"]

log = logging.getLogger("geogate.node")

EXIT_LOAD_FAILED = 1
EXIT_BAD_MODEL = 3  # the weights are not the ones --expect-sha256 names: do not restart blindly


async def serve(config: NodeConfig) -> int:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    service = NodeService(config, NodeMetrics())
    runner = AppRunner(create_app(service), access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    server_ssl = None
    if config.tls_cert and config.tls_key:
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(config.tls_cert, config.tls_key)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=server_ssl, backlog=2048)
    await site.start()
    log.info("listening on %s (region %s, color %s)", _own_url(config), config.region, config.color)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    exit_code = 0
    starter = asyncio.create_task(service.start(), name="node-start")
    stopper = asyncio.create_task(stop.wait(), name="node-stop")
    await asyncio.wait({starter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if starter.done() and starter.exception() is not None:
        exc = starter.exception()
        log.error("model failed to load: %s", exc, exc_info=exc)
        exit_code = EXIT_BAD_MODEL if isinstance(exc, ChecksumMismatch) else EXIT_LOAD_FAILED
    else:
        heartbeat = _start_heartbeat(config, service, started_at)
        await stopper
        log.info("signal received: draining (up to %.0f s)", config.drain_timeout_s)
        if heartbeat is not None:  # gateways stop sending new work before the drain
            await heartbeat.stop(deregister=True)
            await heartbeat.heartbeats.store.close()

    stopper.cancel()
    drained = await service.drain(config.drain_timeout_s)
    if not drained:
        log.warning("drain timed out; unfinished calls are answered 503")
    await runner.cleanup()
    await service.close()
    starter.cancel()
    log.info("stopped")
    return exit_code


def _start_heartbeat(config: NodeConfig, service: NodeService, started_at: str) -> HeartbeatPublisher | None:
    if not config.registry_url or service.model is None:
        return None
    beat = NodeHeartbeat(
        region=config.region,
        color=config.color,
        url=config.advertise_url or _own_url(config),
        model_version=service.model.model_version,
        sha256=service.model.checksum,
        started_at=started_at,
        pid=os.getpid(),
    )
    publisher = HeartbeatPublisher(Heartbeats(open_store(config.registry_url), ttl_s=config.heartbeat_ttl_s), beat)
    publisher.start()
    log.info("publishing heartbeats to %s every %.1f s", publisher.heartbeats.store.name, config.heartbeat_ttl_s / 3)
    return publisher


def _own_url(config: NodeConfig) -> str:
    return f"{'https' if config.tls_cert else 'http'}://{config.host}:{config.port}"
