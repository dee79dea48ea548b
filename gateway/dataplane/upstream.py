"""The fenced call to a node: pooled keep-alive connections, timeouts, retries elsewhere.

An attempt fails on a connect error, a timeout, a 5xx, a 429, or an answer whose
``X-Model-Version`` is not the registry snapshot's (fencing: a node of the wrong version
never serves a client, whatever it says about itself). A failed attempt is retried on
another node of the region, then in the next region of the plan, up to ``max_attempts``
and within a retry budget (a share of recent calls), so retries cannot multiply an
outage. Optional hedging sends a slow attempt's twin to the next node, within its own
budget. The client's remaining deadline travels as ``X-Deadline-Ms``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from geogate.gateway.config import UpstreamSettings
from geogate.gateway.dataplane.http1 import Http1Error, Http1Pool
from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.gateway.routing.balancer import Plan
from geogate.gateway.routing.nodes import NodeState
from geogate.gateway.routing.outliers import OutlierDetector
from geogate.shared.errors import DeadlineExceeded, GeogateError, Unavailable

__all__ = ["Answer", "NodeRejected", "RetryBudget", "Upstream"]

log = logging.getLogger("geogate.gateway.upstream")

MIN_P95_SAMPLES = 20  # fewer good answers than this: the fixed hedge delay
RETRY_FLOOR_PER_S = 10.0  # retries always allowed at this rate, so a quiet gateway can still retry


@dataclass(frozen=True)
class Answer:
    body: bytes
    region: str
    node: str
    attempts: int


class NodeRejected(GeogateError):
    """The node refused the request itself (a 4xx other than 429): its error body is
    passed to the client as is."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"node answered {status}")
        self.status = status
        self.body = body


class RetryBudget:
    """Retries allowed: ``percent`` of the calls of the last ``window_s`` seconds, plus a floor."""

    def __init__(self, percent: float, window_s: float = 10.0, floor_per_s: float = RETRY_FLOOR_PER_S) -> None:
        self.percent = percent
        self.window_s = window_s
        self.floor_per_s = floor_per_s
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
        allowed = len(self._calls) * self.percent / 100 + self.floor_per_s * self.window_s
        if len(self._retries) >= allowed:
            return False
        self._retries.append(now)
        return True


class Upstream:
    """Sends a call to the nodes its plan names, one attempt at a time, and reports every
    attempt's outcome to outlier detection."""

    def __init__(self, settings: UpstreamSettings, client: Http1Pool, outliers: OutlierDetector,
                 metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.client = client
        self.outliers = outliers
        self.metrics = metrics
        self.budget = RetryBudget(settings.retry_budget_percent)
        self.hedges = RetryBudget(settings.hedge_budget_percent, floor_per_s=0.0)
        self._latencies: dict[str, deque[float]] = {}  # recent good attempts per region, seconds

    async def call(self, path: str, payload: bytes, plan: Plan, deadline: float, request_id: str) -> Answer:
        """The first good answer from the plan's regions; raises Unavailable when none.

        With ``hedge_after_ms``, an attempt that has not answered in that time gets a twin
        on the next node (within the hedge budget); the first good answer wins and the
        other is cancelled.
        """
        if not plan.regions:
            skipped = ", ".join(f"{r}: {why}" for r, why in plan.skipped.items())
            raise Unavailable(f"no region may serve this call ({skipped})", retry_after_s=1)
        self.budget.call()
        self.hedges.call()
        errors: list[str] = []
        attempts = 0
        max_attempts = self.settings.max_attempts
        hedge_after = self.hedge_delay(plan.regions[0])
        send = functools.partial(self._attempt, path=path, payload=payload, version=plan.version, deadline=deadline,
                                 request_id=request_id)
        while attempts < max_attempts and (node := plan.next_node()) is not None:
            if attempts:
                self._spend_retry(errors)
            attempts += 1
            if hedge_after > 0 and attempts < max_attempts:
                node, body, twins = await self._hedged(node, plan.next_node, hedge_after, send, errors)
                attempts += twins
            else:
                body, error = await send(node)
                if body is None:
                    errors.append(f"{node.spec.region}/{node.url}: {error}")
            if body is not None:
                return Answer(body, node.spec.region, node.url, attempts)
        raise Unavailable(f"no node answered ({'; '.join(errors) or 'no candidates'})", retry_after_s=1)

    async def _hedged(
        self,
        node: NodeState,
        next_node: Callable[[], NodeState | None],
        delay: float,
        send: Callable[[NodeState], Coroutine[Any, Any, tuple[bytes | None, str]]],
        errors: list[str],
    ) -> tuple[NodeState, bytes | None, int]:
        """One attempt, plus a twin on the next node if it has not answered after ``delay``
        (within the hedge budget): the first good answer wins, the other is cancelled.
        Returns the node that answered (or the last that failed), its body and the twins sent."""
        running = {asyncio.create_task(send(node)): node}
        twins = 0
        try:
            done, _ = await asyncio.wait(running, timeout=delay)
            if not done and self.hedges.allow_retry() and (twin := next_node()) is not None:
                self.metrics.hedges.inc()
                running[asyncio.create_task(send(twin))] = twin
                twins = 1
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    node = running.pop(task)
                    body, error = task.result()  # NodeRejected and DeadlineExceeded go to the client
                    if body is not None:
                        return node, body, twins
                    errors.append(f"{node.spec.region}/{node.url}: {error}")
            return node, None, twins
        finally:
            for task in running:
                task.cancel()

    def _spend_retry(self, errors: list[str]) -> None:
        if not self.budget.allow_retry():
            self.metrics.retry_budget_exhausted.inc()
            raise Unavailable(f"retry budget exhausted after: {'; '.join(errors)}", retry_after_s=1)
        self.metrics.retries.inc()

    def hedge_delay(self, region: str) -> float:
        """Seconds before a twin is sent (0: no hedging): ``hedge_after_ms``, or with
        ``hedge_p95`` the region's recent p95 latency when it is longer (and known)."""
        fixed = self.settings.hedge_after_ms / 1000
        if not self.settings.hedge_p95:
            return fixed
        window = self._latencies.get(region)
        if window is None or len(window) < MIN_P95_SAMPLES:
            return fixed
        ordered = sorted(window)
        return max(fixed, ordered[int(0.95 * (len(ordered) - 1))])

    async def _attempt(self, node: NodeState, *, path: str, payload: bytes, version: str, deadline: float,
                       request_id: str) -> tuple[bytes | None, str]:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline passed before a node answered")
        headers = {"Content-Type": "application/json", "X-Request-ID": request_id,
                   "X-Deadline-Ms": str(max(1, int(remaining * 1000)))}
        region = node.spec.region
        outliers = self.outliers
        outliers.begin(node)
        started = time.perf_counter()
        try:
            answer = await self.client.request("POST", node.url, path, payload, headers,
                                               min(self.settings.attempt_timeout_ms / 1000, remaining))
        except (Http1Error, TimeoutError, OSError) as exc:
            if isinstance(exc, TimeoutError) and self._caller_out_of_time(deadline):
                outliers.abandoned(node)
                raise DeadlineExceeded(f"the call's deadline passed while {region} was computing") from exc
            outliers.failed(node, (time.perf_counter() - started) * 1000, type(exc).__name__)
            self.metrics.attempt_count.inc((region, "failed"))
            return None, type(exc).__name__
        except BaseException:  # cancelled (a hedge's twin answered first): says nothing about the node
            outliers.abandoned(node)
            raise
        status, body, served = answer.status, answer.body, answer.headers.get("x-model-version")
        elapsed = time.perf_counter() - started
        ms = elapsed * 1000
        self.metrics.attempt_latency.observe((region,), elapsed)
        if status == 200 and served == version:
            outliers.succeeded(node, ms)
            self._latencies.setdefault(region, deque(maxlen=256)).append(elapsed)
            self.metrics.attempt_count.inc((region, "ok"))
            return body, ""
        if status == 200:
            self.metrics.version_mismatch.labels(region).inc()
            outliers.failed(node, ms, f"version {served!r} != {version!r}", serves=served)
            self.metrics.attempt_count.inc((region, "failed"))
            return None, "version-mismatch"
        if status == 429:
            outliers.declined(node, ms)
            self.metrics.attempt_count.inc((region, "overloaded"))
            return None, "429"
        if status == 504 and self._caller_out_of_time(deadline):  # the node kept the deadline we passed on
            outliers.failed(node, ms, "status 504", counts=False)
            raise DeadlineExceeded(f"the call's deadline passed while {region} was computing")
        if status >= 500:
            outliers.failed(node, ms, f"status {status}")
            self.metrics.attempt_count.inc((region, "failed"))
            return None, f"status {status}"
        outliers.declined(node, ms)
        self.metrics.attempt_count.inc((region, "rejected"))
        raise NodeRejected(status, body)

    @staticmethod
    def _caller_out_of_time(deadline: float) -> bool:
        """A timeout the caller's own deadline caused says nothing about the node: it must
        not count as the node's failure (eject it) nor be retried elsewhere."""
        return asyncio.get_running_loop().time() >= deadline - 0.001
