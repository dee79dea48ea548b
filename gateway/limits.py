"""Per-client limits shared by every gateway: call rate, item rate, daily quota, and a
per-gateway cap on calls in flight.

Rates and the quota are token buckets in the registry's store (one Lua script per take,
on the store's clock), so a client gets the same limit whichever gateway it reaches. A
gateway does not ask the store on every call: it takes a small lease of tokens (what the
client used in the last 50 ms here, at most a quarter of the bucket) and spends it
locally, so the store sees a fraction of the calls while the sum over every gateway
still never exceeds what the shared bucket handed out: rate x time + burst. A lease
unused for a second is dropped, so tokens cannot pile up at one gateway.

When the store is unreachable each gateway falls back to a bucket of its own with the
client's limits times ``limit_fallback_factor`` (fail open with a local cap), counted in
``geogate_gateway_limiter_fallback_total`` and shown by ``geogate_gateway_limiter_local``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.metrics import GatewayMetrics
from shared.clients import Limits
from shared.errors import GeogateError, StoreUnavailable
from shared.store import MemoryStore, Store, Taken

__all__ = ["Limiter", "RateLimited", "Verdict"]

log = logging.getLogger("geogate.gateway.limits")

MILLI = 1000  # tokens are counted in thousandths, so a cache hit can cost a fraction of an item
LEASE_S = 0.05  # a lease holds about this much of a client's recent demand
LEASE_TTL_S = 1.0
LOCAL_S = 5.0  # after a store error, stay on the local buckets this long before asking again


@dataclass(frozen=True, slots=True)
class Verdict:
    """A bucket's state after a take, for the X-RateLimit-* headers."""

    scope: str  # requests, items or daily-quota
    limit: float  # the bucket's size, in calls or items
    remaining: float
    reset_s: float  # until the bucket is full again (the quota: until the UTC day ends)

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": _num(self.limit), "X-RateLimit-Remaining": _num(self.remaining),
                "X-RateLimit-Reset": str(math.ceil(self.reset_s)), "X-RateLimit-Scope": self.scope}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")


class RateLimited(GeogateError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float, verdict: Verdict | None) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.verdict = verdict

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s), **(self.verdict.headers() if self.verdict else {})}


@dataclass
class _Lease:
    tokens: int = 0
    expires: float = 0.0
    demand: float = 0.0  # tokens a second spent here lately (an EWMA)
    last: float = 0.0
    left: int = 0  # the shared bucket's tokens at the last take
    full_ms: int = 0


@dataclass(frozen=True, slots=True)
class _Spec:
    scope: str
    key: str
    rate: int  # milli-tokens a second (0: no refill, the quota)
    burst: int  # milli-tokens
    ttl_s: float


class Limiter:
    def __init__(self, store: Store, namespace: str, metrics: GatewayMetrics, *, fallback_factor: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._prefix = f"{namespace}:limits:"
        self._metrics = metrics
        self._factor = fallback_factor
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._local = MemoryStore(clock)  # the fallback buckets
        self._local_until = 0.0
        self._in_flight: dict[str, int] = {}
        self._day, self._midnight = "", 0.0

    # -- the three checks a call passes ----------------------------------------------------

    async def admit(self, client: str, limits: Limits) -> Verdict | None:
        """One call; raises RateLimited. Returns the request bucket's state, if limited."""
        if not limits.rps:
            return None
        burst = limits.burst or max(1.0, limits.rps)
        spec = _Spec("requests", f"{self._prefix}{client}:requests", int(limits.rps * MILLI), int(burst * MILLI),
                     2 * burst / limits.rps + 1)
        return await self._take(client, spec, MILLI)

    async def charge(self, client: str, limits: Limits, items: float) -> None:
        """``items`` (hits already discounted) against the item rate and the daily quota."""
        cost = max(1, int(items * MILLI))
        if limits.items_per_s:
            burst = limits.items_burst or max(1.0, limits.items_per_s)
            await self._take(client, _Spec("items", f"{self._prefix}{client}:items", int(limits.items_per_s * MILLI),
                                           int(burst * MILLI), 2 * burst / limits.items_per_s + 1), cost)
        if limits.daily_quota:
            await self._take(client, _Spec("daily-quota", f"{self._prefix}{client}:quota:{self._today()}", 0,
                                           int(limits.daily_quota * MILLI), 2 * 86_400), cost)

    def enter(self, client: str, limits: Limits) -> bool:
        """Takes a slot of the client's calls in flight here; False when it has none left."""
        if not limits.max_concurrent:
            return False
        held = self._in_flight.get(client, 0)
        if held >= limits.max_concurrent:
            raise RateLimited(f"client {client!r} already has {held} calls in flight here (its cap)", 1, None)
        self._in_flight[client] = held + 1
        return True

    def leave(self, client: str) -> None:
        held = self._in_flight.get(client, 1) - 1
        if held:
            self._in_flight[client] = held
        else:
            self._in_flight.pop(client, None)

    def _today(self) -> str:
        """The UTC day (YYYYMMDD) that names today's quota buckets; recomputed at midnight only."""
        if time.time() >= self._midnight:
            now = datetime.now(UTC)
            self._day = f"{now:%Y%m%d}"
            self._midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        return self._day

    @property
    def local(self) -> bool:
        return self._clock() < self._local_until

    # -- leases ------------------------------------------------------------------------------

    async def _take(self, client: str, spec: _Spec, cost: int) -> Verdict:
        now = self._clock()
        lease = self._leases.get(spec.key)
        if lease is None:
            lease = self._leases[spec.key] = _Lease(last=now)
        elapsed = max(now - lease.last, 1e-3)
        lease.demand = lease.demand * math.exp(-elapsed / LEASE_TTL_S) + cost / LEASE_TTL_S
        lease.last = now
        if lease.expires <= now:
            lease.tokens = 0
        if lease.tokens < cost:
            want = int(min(max(cost, lease.demand * LEASE_S), max(cost, spec.burst / 4)))
            taken = await self._take_shared(spec, want, cost - lease.tokens)
            lease.tokens += taken.granted
            lease.left, lease.full_ms = taken.left, taken.full_ms
            lease.expires = now + LEASE_TTL_S
            if lease.tokens < cost:
                verdict = self._verdict(spec, lease)
                self._metrics.client_throttled(client, spec.scope).inc()
                wait_s = taken.wait_ms / 1000 if taken.wait_ms >= 0 else verdict.reset_s
                raise RateLimited(f"client {client!r} is over its {spec.scope} limit", wait_s, verdict)
        lease.tokens -= cost
        return self._verdict(spec, lease)

    async def _take_shared(self, spec: _Spec, want: int, need: int) -> Taken:
        if not self.local:
            try:
                taken = await self._store.take(spec.key, spec.rate, spec.burst, want, need, spec.ttl_s)
            except StoreUnavailable as exc:
                log.warning("limits fall back to this gateway's own buckets (x%.2f) for %.0f s: %s",
                            self._factor, LOCAL_S, exc)
                self._local_until = self._clock() + LOCAL_S
                self._metrics.limiter_fallback.inc()
                self._metrics.limiter_local.set(1)
            else:
                self._metrics.limiter_local.set(0)
                return taken
        return await self._local.take(spec.key, int(spec.rate * self._factor), max(1, int(spec.burst * self._factor)),
                                      want, need, spec.ttl_s)

    def _verdict(self, spec: _Spec, lease: _Lease) -> Verdict:
        if spec.rate:
            reset = lease.full_ms / 1000
        else:  # the quota: it is full again at the next UTC midnight
            reset = self._midnight - time.time()
        return Verdict(spec.scope, spec.burst / MILLI, (lease.left + lease.tokens) / MILLI, reset)
