"""The fenced call to a node: pooled keep-alive session, timeouts, retries elsewhere.

An attempt fails on a connect error, a timeout, a 5xx, a 429, or an answer whose
``X-Model-Version`` is not the registry snapshot's (fencing: a node of the wrong version
never serves a client, whatever it says about itself). A failed attempt is retried on
another node of the region, then in the next region of the plan, up to ``max_attempts``
and within a retry budget (a share of recent calls), so retries cannot multiply an
outage. The client's remaining deadline travels as ``X-Deadline-Ms``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import aiohttp

from gateway.balancer import Balancer, Plan
from gateway.health import HealthChecker, NodeState
from gateway.metrics import GatewayMetrics
from shared.config import GatewayConfig
from shared.errors import DeadlineExceeded, GeogateError, Unavailable

__all__ = ["Answer", "NodeRejected", "RetryBudget", "Upstream"]

log = logging.getLogger("geogate.gateway.upstream")

RETRY_FLOOR_PER_S = 10.0  # retries always allowed at this rate, so a quiet gateway can still retry


@dataclass(frozen=True)
class Answer:
    body: bytes
    region: str
    node: str
    attempts: int


class NodeRejected(GeogateError):
    """The node refused the request itself (a 4xx other than 429): passed to the client."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"node answered {status}")
        self.status = status
        self.body = body


class RetryBudget:
    """Retries allowed: ``percent`` of the calls of the last ``window_s`` seconds, plus a floor."""

    def __init__(self, percent: float, window_s: float = 10.0) -> None:
        self.percent = percent
        self.window_s = window_s
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        for q in (self._calls, self._retries):
            while q and q[0] < now - self.window_s:
                q.popleft()

    def call(self) -> None:
        self._calls.append(time.monotonic())

    def allow_retry(self) -> bool:
        now = time.monotonic()
        self._trim(now)
        allowed = len(self._calls) * self.percent / 100 + RETRY_FLOOR_PER_S * self.window_s
        if len(self._retries) >= allowed:
            return False
        self._retries.append(now)
        return True


class Upstream:
    def __init__(self, config: GatewayConfig, session: aiohttp.ClientSession, health: HealthChecker,
                 balancer: Balancer, metrics: GatewayMetrics) -> None:
        self.config = config
        self.session = session
        self.health = health
        self.balancer = balancer
        self.metrics = metrics
        self.budget = RetryBudget(config.retry_budget_percent)

    async def call(self, path: str, payload: bytes, plan: Plan, color: str, version: str, deadline: float,
                   request_id: str) -> Answer:
        """The first good answer from the plan's regions; raises Unavailable when none."""
        self.budget.call()
        attempts = 0
        tried: set[str] = set()
        errors: list[str] = []
        for region in plan.regions:
            while attempts < self.config.max_attempts:
                node = self.balancer.pick(region, color, version, tried)
                if node is None:
                    break  # this region has no untried node left: the next region
                if attempts and not self.budget.allow_retry():
                    self.metrics.retry_budget_exhausted.inc()
                    raise Unavailable(f"retry budget exhausted after: {'; '.join(errors)}", retry_after_s=1)
                if attempts:
                    self.metrics.retries.inc()
                attempts += 1
                tried.add(node.url)
                body, error = await self._attempt(node, path, payload, version, deadline, request_id)
                if body is not None:
                    return Answer(body, region, node.url, attempts)
                errors.append(f"{node.spec.region}/{node.url}: {error}")
            if attempts >= self.config.max_attempts:
                break
        if not plan.regions:
            skipped = ", ".join(f"{r}: {why}" for r, why in plan.skipped.items())
            raise Unavailable(f"no region may serve this call ({skipped})", retry_after_s=1)
        raise Unavailable(f"no node answered ({'; '.join(errors) or 'no candidates'})", retry_after_s=1)

    async def _attempt(self, node: NodeState, path: str, payload: bytes, version: str, deadline: float,
                       request_id: str) -> tuple[bytes | None, str]:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline passed before a node answered")
        timeout = aiohttp.ClientTimeout(total=min(self.config.attempt_timeout_ms / 1000, remaining),
                                        sock_connect=self.config.connect_timeout_ms / 1000)
        headers = {"Content-Type": "application/json", "X-Request-ID": request_id,
                   "X-Deadline-Ms": str(max(1, int(remaining * 1000)))}
        region = node.spec.region
        node.outstanding += 1
        started = time.perf_counter()
        try:
            async with self.session.post(node.url + path, data=payload, headers=headers, timeout=timeout) as resp:
                body = await resp.read()
                status, served = resp.status, resp.headers.get("X-Model-Version")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._failed(node, type(exc).__name__)
            return None, type(exc).__name__
        finally:
            node.outstanding -= 1
        elapsed = time.perf_counter() - started
        self.metrics.upstream_latency.labels(region).observe(elapsed)
        if status == 200 and served == version:
            self.health.call_succeeded(node, elapsed * 1000)
            self.metrics.upstream_attempts.labels(region, "ok").inc()
            return body, ""
        if status == 200:
            self.metrics.version_mismatch.labels(region).inc()
            self._failed(node, f"version {served!r} != {version!r}")
            node.model_version = served  # so the balancer stops choosing it until a probe says otherwise
            return None, "version-mismatch"
        if status == 429:
            self.metrics.upstream_attempts.labels(region, "overloaded").inc()
            return None, "429"
        if status >= 500:
            self._failed(node, f"status {status}")
            return None, f"status {status}"
        self.metrics.upstream_attempts.labels(region, "rejected").inc()
        raise NodeRejected(status, body)

    def _failed(self, node: NodeState, reason: str) -> None:
        self.metrics.upstream_attempts.labels(node.spec.region, "failed").inc()
        self.health.call_failed(node, reason)
