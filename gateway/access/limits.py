"""Per-client limits shared by every gateway: call rate, item rate, daily quota, and a
per-gateway cap on calls in flight.

Rates and the quota are token buckets in the registry's store (one Lua script per take,
on the store's clock), so a client gets the same limit whichever gateway it reaches. A
gateway does not ask the store on every call: it takes a small lease of tokens (about
500 ms of what the client spends here, at most a quarter of the bucket), spends it
locally and, for a busy client, tops it up in the background before it runs out, so the
store sees a few takes per thousand calls while the sum over every gateway never exceeds
what the shared bucket handed out: rate x time + burst. A lease unused for a second is
dropped, so tokens cannot pile up at one gateway; a refusal is answered here until the
store said tokens come back.

When the store is unreachable each gateway falls back to a bucket of its own with the
client's limits times ``limit_fallback_factor`` (fail open with a local cap), counted in
``geogate_gateway_limiter_fallback_total`` and shown by ``geogate_gateway_limiter_local``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.shared.clients import Limits
from geogate.shared.errors import GeogateError, StoreUnavailable
from geogate.shared.store import MemoryStore, Store, Taken

__all__ = ["Bucket", "ClientBuckets", "Limiter", "RateLimited", "Verdict", "rate_headers"]

log = logging.getLogger("geogate.gateway.limits")

MILLI = 1000  # tokens are counted in thousandths, so a cache hit can cost a fraction of an item
LEASE_S = 0.5  # a lease holds about this much of a client's recent demand
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


@dataclass(slots=True, eq=False)
class Bucket:
    """One client's bucket of one scope as this gateway sees it: the shared bucket's
    address and size, and the lease of its tokens held here."""

    scope: str
    key: str
    rate: int  # milli-tokens a second (0: no refill, the quota)
    burst: int  # milli-tokens
    ttl_s: float
    tokens: int = 0  # the lease: milli-tokens taken from the shared bucket, not yet spent
    expires: float = 0.0
    low: int = -1  # top the lease up in the background below this (-1: a client too quiet for that)
    spent: int = 0  # since the last take, for the demand estimate
    since: float = 0.0
    demand: float = 0.0  # milli-tokens a second spent here lately
    left: int = 0  # the shared bucket's tokens at the last take
    full_ms: int = 0
    wait_ms: int = 0
    refused_until: float = 0.0  # the store said no tokens before then: refuse here, without asking
    refill: asyncio.Future[bool] | None = None  # at most one take from the store at a time
    limit_text: str = ""  # the bucket's size as X-RateLimit-Limit says it

    def __post_init__(self) -> None:
        self.limit_text = _num(self.burst / MILLI)

    def lease_size(self, cost: int, now: float) -> int:
        """About LEASE_S of recent demand, at least one call's cost, at most a quarter of the
        bucket; measured here, at each take, so the calls between pay nothing for it."""
        if now > self.since:
            self.demand = (self.demand + self.spent / (now - self.since)) / 2
        self.spent, self.since = 0, now
        # whole calls' worth: a remainder smaller than a call would sit unused in the lease
        return cost * max(1, int(min(self.demand * LEASE_S, self.burst / 4) // cost))


@dataclass(slots=True)
class ClientBuckets:
    """A client's buckets under one set of its limits (new limits: new buckets, new leases)."""

    limits: Limits
    requests: Bucket | None
    items: Bucket | None
    quota: Bucket | None
    day: str  # the UTC day the quota bucket counts
    until: float = math.inf  # when that day ends (POSIX time)
    per_call: tuple[Bucket, ...] = field(init=False)  # what a call spends from: the request bucket, if any
    per_item: tuple[Bucket, ...] = field(init=False)  # what an item spends from: the item and quota buckets

    def __post_init__(self) -> None:
        self.per_call = tuple(b for b in (self.requests,) if b is not None)
        self.per_item = tuple(b for b in (self.items, self.quota) if b is not None)


class Limiter:
    def __init__(self, store: Store, namespace: str, metrics: GatewayMetrics, *, fallback_factor: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._prefix = f"{namespace}:limits:"
        self._metrics = metrics
        self._factor = fallback_factor
        self._clock = clock
        self._clients: dict[str, ClientBuckets] = {}
        self._local = MemoryStore(clock)  # the fallback buckets
        self._local_until = 0.0
        self._in_flight: dict[str, int] = {}
        self._day, self._midnight = "", 0.0

    # -- the three checks a call passes ----------------------------------------------------

    def admit(self, client: str, limits: Limits) -> tuple[ClientBuckets, Awaitable[None] | None]:
        """One call against the request rate: the client's buckets (for ``charge`` and
        ``rate_headers``) and, when the lease could not cover the call, what to await (the
        store, or RateLimited). Only for a client with shared limits (``Caller.shared``)."""
        buckets = self._clients.get(client)
        # The same Limits object comes with every call of a client until its limits change
        # (access.callers builds one per registry epoch), and the quota's day changes at
        # midnight only: the common case is this one test.
        if (buckets is None or buckets.limits is not limits
                or (buckets.quota is not None and time.time() >= buckets.until)):
            buckets = self._buckets(client, limits)
        if buckets.per_call and not self._spend_now(buckets.per_call, MILLI, self._clock()):
            return buckets, self._spend(client, buckets.per_call[0], MILLI)
        return buckets, None

    def charge(self, client: str, buckets: ClientBuckets, items: float) -> Awaitable[None] | None:
        """``items`` (hits already discounted) against the item rate and the daily quota:
        None when the leases covered them (the common case, without a coroutine), else
        what to await (the store, or RateLimited)."""
        cost = max(1, int(items * MILLI))
        spent = self._spend_now(buckets.per_item, cost, self._clock())
        return self._charge(client, buckets.per_item[spent:], cost) if spent < len(buckets.per_item) else None

    async def _charge(self, client: str, buckets: tuple[Bucket, ...], cost: int) -> None:
        """``cost`` from each of ``buckets``, the first of which the lease could not cover."""
        await self._spend(client, buckets[0], cost)
        for bucket in buckets[1:]:
            if not self._spend_now((bucket,), cost, self._clock()):
                await self._spend(client, bucket, cost)

    def enter(self, client: str, limits: Limits) -> bool:
        """Takes a slot of the client's calls in flight here (True) or raises RateLimited;
        False when the client has no cap."""
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

    @property
    def local(self) -> bool:
        return self._clock() < self._local_until

    # -- buckets and leases ------------------------------------------------------------------

    def _buckets(self, client: str, limits: Limits) -> ClientBuckets:
        day = self._today() if limits.daily_quota else ""
        found = self._clients.get(client)
        if found is not None and found.day == day and found.limits == limits:
            found.limits = limits  # equal limits of a newer epoch: the same buckets, found by identity from now on
        else:
            now = self._clock()

            def bucket(scope: str, rate: float, burst: float, key: str, ttl_s: float) -> Bucket:
                return Bucket(scope, f"{self._prefix}{client}:{key}", int(rate * MILLI), int(burst * MILLI), ttl_s,
                              since=now)

            # no burst given: one second's worth; a full bucket needs no key, so its key lives a little
            # longer than the bucket takes to fill
            calls, items = limits.burst or max(1.0, limits.rps), limits.items_burst or max(1.0, limits.items_per_s)
            found = self._clients[client] = ClientBuckets(
                limits=limits,
                requests=bucket("requests", limits.rps, calls, "requests", 2 * calls / limits.rps + 1)
                if limits.rps else None,
                items=bucket("items", limits.items_per_s, items, "items", 2 * items / limits.items_per_s + 1)
                if limits.items_per_s else None,
                quota=bucket("daily-quota", 0.0, limits.daily_quota, f"quota:{day}", 2 * 86_400)
                if limits.daily_quota else None,
                day=day, until=self._midnight if day else math.inf)
        return found

    def _today(self) -> str:
        """The UTC day (YYYYMMDD) that names today's quota buckets; recomputed at midnight only."""
        if time.time() >= self._midnight:
            now = datetime.now(UTC)
            self._day = f"{now:%Y%m%d}"
            self._midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        return self._day

    def _spend_now(self, buckets: tuple[Bucket, ...], cost: int, now: float) -> int:
        """``cost`` from each lease in turn while they hold that much (no await: the common
        case); how many it came from, fewer than all where the next could not cover it. The
        store is asked in the background when a lease runs low. One call for all of a
        call's buckets: on the hit path every Python call here shows in the throughput."""
        spent = 0
        for b in buckets:
            if b.expires <= now:
                b.tokens = 0  # unused for a second: given up, so tokens cannot pile up at one gateway
            if b.tokens < cost:
                break
            b.tokens -= cost
            b.spent += cost
            spent += 1
            if b.tokens < b.low and b.refill is None:
                b.refill = asyncio.create_task(self._refill(b, cost, 1))
                b.refill.add_done_callback(_log_failure)
        return spent

    async def _spend(self, client: str, b: Bucket, cost: int) -> None:
        """``cost`` when the lease cannot cover it: from the store, or RateLimited."""
        now = self._clock()
        if now < b.refused_until:  # the store said when tokens come back; no need to ask before
            self._refuse(client, b, b.refused_until - now)
        while b.tokens < cost:
            refill = b.refill  # one take from the store at a time: wait for one under way
            mine = refill is None
            if refill is None:
                refill = b.refill = asyncio.ensure_future(self._refill(b, cost, cost - b.tokens))
            enough = await asyncio.shield(refill)
            # Others waiting on the same take may have spent what it brought: only a take of
            # this call's own that the store could not fill means the client is over its limit.
            if mine and not enough:
                wait_s = b.wait_ms / 1000 if b.wait_ms >= 0 else self._verdict(b).reset_s
                b.refused_until = self._clock() + wait_s
                self._refuse(client, b, wait_s)
        b.tokens -= cost
        b.spent += cost

    def _refuse(self, client: str, b: Bucket, wait_s: float) -> None:
        self._metrics.client_throttled.inc((client, b.scope))
        raise RateLimited(f"client {client!r} is over its {b.scope} limit", wait_s, self._verdict(b))

    async def _refill(self, b: Bucket, cost: int, need: int) -> bool:
        """Fills the lease up to its size (at least ``need`` more); whether ``need`` was there."""
        size = b.lease_size(cost, self._clock())
        # Top-ups ahead of need only for a client busy enough to spend them within the
        # lease's lifetime: otherwise they would expire unused and count as spent.
        b.low = size // 2 if b.demand * LEASE_S > 2 * cost else -1
        try:
            taken = await self._take_shared(b, max(size - b.tokens, need), need)
        finally:
            b.refill = None
        if b.expires <= self._clock():
            b.tokens = 0
        b.tokens += taken.granted
        b.left, b.full_ms, b.wait_ms = taken.left, taken.full_ms, taken.wait_ms
        b.expires = self._clock() + LEASE_TTL_S
        return taken.granted >= need

    async def _take_shared(self, b: Bucket, want: int, need: int) -> Taken:
        if not self.local:
            try:
                taken = await self._store.take(b.key, b.rate, b.burst, want, need, b.ttl_s)
            except StoreUnavailable as exc:
                log.warning("limits fall back to this gateway's own buckets (x%.2f) for %.0f s: %s",
                            self._factor, LOCAL_S, exc)
                self._local_until = self._clock() + LOCAL_S
                self._metrics.limiter_fallback.inc()
                self._metrics.limiter_local.set(1)
            else:
                self._metrics.limiter_local.set(0)
                return taken
        return await self._local.take(b.key, int(b.rate * self._factor), max(1, int(b.burst * self._factor)),
                                      want, need, b.ttl_s)

    def _verdict(self, b: Bucket) -> Verdict:
        reset = b.full_ms / 1000 if b.rate else self._midnight - time.time()  # the quota: full at UTC midnight
        return Verdict(b.scope, b.burst / MILLI, (b.left + b.tokens) / MILLI, reset)


def rate_headers(buckets: ClientBuckets, headers: dict[str, str]) -> None:
    """X-RateLimit-* for a successful call, from the request bucket as this gateway sees it
    (X-RateLimit-Scope only comes with a 429: on success it is always the request rate)."""
    b = buckets.requests
    if b is not None:
        headers["X-RateLimit-Limit"] = b.limit_text
        headers["X-RateLimit-Remaining"] = str((b.left + b.tokens) // MILLI)
        headers["X-RateLimit-Reset"] = str(-(-b.full_ms // 1000))


def _log_failure(task: asyncio.Future[bool]) -> None:
    """A background top-up that failed must not fail unseen (a store outage is no failure: it
    falls back to the local buckets)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("topping up a lease failed", exc_info=task.exception())
