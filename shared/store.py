"""The storage interface geogate's shared state lives on, and its two implementations.

``RedisStore`` (``redis.asyncio`` with hiredis) is what a deployment uses: the registry on
the global primary, result caches near each region. ``MemoryStore`` is the embedded
default for a single process with no Redis. One contract suite
(``tests/test_store_contract.py``) runs against both, so they cannot drift.

The interface is small and primitive: bytes values with optional TTLs, prefix scans,
pub/sub, capped streams, and one compound write, ``compare_and_set``, that sets a record
only if its counter still has the expected value and, in the same atomic step, publishes
a message and appends an audit entry. The registry builds on it; the store knows nothing
of colors or versions.

Losing the connection is an expected state: every operation then raises
``StoreUnavailable`` (a 503), and callers decide what it means (the cache: a miss; the
registry watcher: keep the last snapshot; an admin write: 503). ``RedisStore`` stops
hammering a dead server: after a failure it fails fast for a backoff that doubles up to
``max_backoff_s``, then tries again; the first success resets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from geogate.shared.errors import Conflict, StoreUnavailable

__all__ = [
    "MemoryStore",
    "RedisStore",
    "Store",
    "Stores",
    "StreamEntry",
    "Taken",
    "open_store",
    "open_stores",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamEntry:
    id: str
    fields: dict[str, bytes]


class Store(Protocol):
    """What geogate needs from a store. Every method may raise ``StoreUnavailable``."""

    name: str  # for logs and /info: "redis://host:port/0" without a password, or "embedded"

    async def get(self, key: str) -> bytes | None: ...
    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...
    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float | None = None) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live key that starts with ``prefix``, with its value."""
    async def counter(self, key: str) -> int:
        """The counter ``compare_and_set`` keeps for ``key`` (0 before the first write)."""
    async def compare_and_set(
        self,
        key: str,
        expected: int,
        value: bytes,
        *,
        channel: str | None = None,
        audit_stream: str | None = None,
        audit: Mapping[str, bytes] | None = None,
        audit_maxlen: int = 10_000,
        new_counter: int | None = None,
    ) -> int:
        """Atomically: if ``counter(key) == expected``, set ``key`` to ``value``, set the
        counter to ``new_counter`` (default ``expected + 1``; never lower), publish ``value`` on ``channel`` and append ``audit`` to
        ``audit_stream`` (capped near ``audit_maxlen``); return the new counter.
        Otherwise raise ``Conflict`` and change nothing."""
    async def publish(self, channel: str, message: bytes) -> None: ...
    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Messages published on ``channel`` after the subscription started. The iterator
        raises ``StoreUnavailable`` when the connection drops; subscribe again."""
    async def take(self, key: str, rate: int, burst: int, want: int, need: int, ttl_s: float) -> Taken:
        """Token bucket ``key`` (holds up to ``burst``, refills ``rate`` a second, on the
        store's clock so that every gateway shares one bucket): if at least ``need``
        tokens are there, take as many as are there up to ``want``."""
    async def xadd(self, stream: str, fields: Mapping[str, bytes], maxlen: int = 10_000) -> str: ...
    async def xrevrange(self, stream: str, count: int) -> list[StreamEntry]:
        """The newest ``count`` entries, newest first."""
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Taken:
    granted: int
    left: int  # tokens in the bucket after this take
    wait_ms: int  # until ``need`` tokens are there (0 when granted; -1: never, a bucket without refill)
    full_ms: int  # until the bucket is full again (-1: never)


def _bucket(tokens: float, at: int, now: int, rate: int, burst: int, want: int,
            need: int) -> tuple[int, int, Taken]:
    """The token bucket's arithmetic (the same as _TAKE_SCRIPT's): new tokens, new stamp, result."""
    if rate > 0 and now > at:
        added = (now - at) * rate // 1000
        if tokens + added >= burst:
            tokens, at = burst, now
        elif added > 0:
            tokens, at = tokens + added, at + added * 1000 // rate
    tokens = int(tokens)
    granted = min(want, tokens) if tokens >= need else 0
    tokens -= granted
    wait = 0 if granted else (-(-(need - tokens) * 1000 // rate) if rate > 0 else -1)
    full = (-(-(burst - tokens) * 1000 // rate) if rate > 0 else -1) if tokens < burst else 0
    return tokens, at, Taken(granted, tokens, wait, full)


@dataclass(frozen=True, slots=True)
class Stores:
    """The registry's store (the global primary) and the cache's (near the region)."""

    registry: Store
    cache: Store

    async def close(self) -> None:
        await self.registry.close()
        if self.cache is not self.registry:
            await self.cache.close()


def open_stores(registry_url: str | None, cache_url: str | None = None, cache_read_url: str | None = None,
                **options: Any) -> Stores:
    """Separate stores for the registry and the cache; the cache defaults to the
    registry's (one connection pool then), and may read from a replica."""
    registry = open_store(registry_url, **options)
    if (cache_url is None or cache_url == registry_url) and cache_read_url is None:
        return Stores(registry, registry)
    return Stores(registry, open_store(cache_url or registry_url, read_url=cache_read_url, **options))


def open_store(url: str | None, *, read_url: str | None = None, **options: Any) -> Store:
    """``None`` or ``""`` or ``embedded``: a ``MemoryStore``; ``redis://``, ``rediss://``,
    ``unix://`` or ``redis+sentinel://h1:26379,h2:26379/service``: a ``RedisStore``
    (with ``read_url``, reads go to that replica)."""
    if not url or url == "embedded":
        return MemoryStore()
    return RedisStore(url, read_url=read_url, **options)


# ---------------------------------------------------------------------------- embedded


class MemoryStore:
    """In-process store: one process, nothing persisted. Same semantics as Redis, down
    to TTLs and capped streams, so that code tested against one works on the other."""

    name = "embedded"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float]] = {}  # key -> (value, expires at or inf)
        self._counters: dict[str, int] = {}
        self._subscribers: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._streams: dict[str, deque[StreamEntry]] = {}
        self._last_id = (0, 0)
        self._lock = asyncio.Lock()

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._data[key]
            return None
        return item[0]

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._live(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._data[key] = (bytes(value), self._clock() + ttl_s if ttl_s else math.inf)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float | None = None) -> None:
        for key, value in items:
            await self.set(key, value, ttl_s)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def scan(self, prefix: str) -> dict[str, bytes]:
        out = {}
        for key in [k for k in self._data if k.startswith(prefix)]:
            value = self._live(key)
            if value is not None:
                out[key] = value
        return out

    async def counter(self, key: str) -> int:
        return self._counters.get(key, 0)

    async def compare_and_set(
        self,
        key: str,
        expected: int,
        value: bytes,
        *,
        channel: str | None = None,
        audit_stream: str | None = None,
        audit: Mapping[str, bytes] | None = None,
        audit_maxlen: int = 10_000,
        new_counter: int | None = None,
    ) -> int:
        new = _new_counter(expected, new_counter)
        async with self._lock:
            current = self._counters.get(key, 0)
            if current != expected:
                raise Conflict(f"{key} changed: expected epoch {expected}, found {current}", current=current)
            self._data[key] = (bytes(value), math.inf)
            self._counters[key] = new
            if channel is not None:
                await self.publish(channel, value)
            if audit_stream is not None and audit is not None:
                await self.xadd(audit_stream, audit, audit_maxlen)
            return new

    async def take(self, key: str, rate: int, burst: int, want: int, need: int, ttl_s: float) -> Taken:
        now = int(self._clock() * 1000)
        raw = self._live(key)
        tokens, at = (burst, now) if raw is None else tuple(int(x) for x in raw.split(b":"))
        tokens, at, taken = _bucket(tokens, at, now, rate, burst, want, need)
        await self.set(key, b"%d:%d" % (tokens, at), ttl_s)
        return taken

    async def publish(self, channel: str, message: bytes) -> None:
        for queue in self._subscribers.get(channel, ()):
            queue.put_nowait(bytes(message))

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._subscribers.setdefault(channel, set()).add(queue)

        async def messages() -> AsyncIterator[bytes]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            self._subscribers[channel].discard(queue)

    async def xadd(self, stream: str, fields: Mapping[str, bytes], maxlen: int = 10_000) -> str:
        millis = int(time.time() * 1000)
        seq = self._last_id[1] + 1 if millis <= self._last_id[0] else 0
        self._last_id = (max(millis, self._last_id[0]), seq)
        entry = StreamEntry(f"{self._last_id[0]}-{seq}", {k: bytes(v) for k, v in fields.items()})
        entries = self._streams.setdefault(stream, deque())
        entries.append(entry)
        while len(entries) > maxlen:
            entries.popleft()
        return entry.id

    async def xrevrange(self, stream: str, count: int) -> list[StreamEntry]:
        entries = self._streams.get(stream, deque())
        return list(reversed(entries))[:count]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------------- Redis


def _raise_if_cancelled() -> None:
    """Re-raise a cancel of the caller that a redis-py call swallowed: on Python 3.11 a
    cancel landing in ``PubSub.get_message`` can end in an ordinary return (no message),
    and a loop around it then never ends (a registry watcher's close() waited forever)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

# KEYS: record, counter, audit stream (optional). ARGV: expected, value, channel ('' for
# none), maxlen, new counter, then audit field/value pairs. One script, so the check, the write, the
# publish and the audit entry happen as one step: no writer can slip in between.
_CAS_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then return {0, current} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[5])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
if KEYS[3] then
  local fields = {}
  for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
end
return {1, tonumber(ARGV[5])}
"""


# KEYS: the bucket (a hash: tokens t, stamp at in ms). ARGV: rate, burst, want, need, ttl ms.
# The store's own clock (TIME), so gateways with skewed clocks still share one bucket;
# integer arithmetic, the same as _bucket's.
_TAKE_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, need = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(s[1]), tonumber(s[2])
if tokens == nil then tokens, at = burst, now end
if rate > 0 and now > at then
  local added = math.floor((now - at) * rate / 1000)
  if tokens + added >= burst then tokens, at = burst, now
  elseif added > 0 then tokens, at = tokens + added, at + math.floor(added * 1000 / rate) end
end
local granted = 0
if tokens >= need then granted = math.min(want, tokens) end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 't', string.format('%d', tokens), 'at', string.format('%d', at))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local wait, full = 0, 0
if granted == 0 then
  if rate > 0 then wait = math.ceil((need - tokens) * 1000 / rate) else wait = -1 end
end
if tokens < burst then
  if rate > 0 then full = math.ceil((burst - tokens) * 1000 / rate) else full = -1 end
end
return {granted, tokens, wait, full}
"""


def _counter_key(key: str) -> str:
    return key + ":epoch"


def _redact(url: str) -> str:
    """The URL without its password (and user), for logs and /info."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class RedisStore:
    """A Redis (or Sentinel-managed Redis) behind the ``Store`` interface."""

    def __init__(
        self,
        url: str,
        *,
        read_url: str | None = None,
        timeout_s: float = 0.5,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.name = _redact(url) + (f" (reads: {_redact(read_url)})" if read_url else "")
        self._timeout = timeout_s
        self._client = self._connect(url)
        self._reader = self._connect(read_url) if read_url else self._client
        self._max_backoff = max_backoff_s
        self._backoff = 0.0
        self._down_until = 0.0
        self._script = self._client.register_script(_CAS_SCRIPT)
        self._take = self._client.register_script(_TAKE_SCRIPT)

    def _connect(self, url: str) -> Any:
        import redis.asyncio as redis

        options: dict[str, Any] = {"socket_timeout": self._timeout, "socket_connect_timeout": self._timeout}
        parts = urlsplit(url)
        if parts.scheme == "redis+sentinel":
            from redis.asyncio.sentinel import Sentinel

            userinfo, _, hostlist = parts.netloc.rpartition("@")
            hosts = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in hostlist.split(",")]
            service = parts.path.strip("/") or "mymaster"
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            sentinel = Sentinel(hosts, sentinel_kwargs=options, **options)
            node: dict[str, Any] = {"db": int(query.get("db", 0)), "password": unquote(userinfo.partition(":")[2]) or None}
            if query.get("role") == "replica":
                return sentinel.slave_for(service, **node)
            return sentinel.master_for(service, **node)
        return redis.Redis.from_url(url, **options)

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        import redis.exceptions

        now = time.monotonic()
        if now < self._down_until:
            raise StoreUnavailable(f"store {self.name} is unreachable (retrying in {self._down_until - now:.1f}s)")
        try:
            result = await op()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            self._backoff = min(self._max_backoff, max(0.05, self._backoff * 2))
            self._down_until = time.monotonic() + self._backoff
            raise StoreUnavailable(f"store {self.name} is unreachable: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            if "LOADING" in str(exc) or "MASTERDOWN" in str(exc) or "READONLY" in str(exc):
                raise StoreUnavailable(f"store {self.name} is not ready: {exc}") from exc
            raise
        self._backoff = 0.0
        return result

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._call(lambda: self._reader.get(key))
        return value

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = await self._call(lambda: self._reader.mget(list(keys)))
        return values

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._call(lambda: self._client.set(key, value, px=_millis(ttl_s)))

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float | None = None) -> None:
        if not items:
            return

        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(key, value, px=_millis(ttl_s))
                await pipe.execute()

        await self._call(run)

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._client.delete(key))

    async def scan(self, prefix: str) -> dict[str, bytes]:
        async def run() -> dict[str, bytes]:
            keys = [k async for k in self._client.scan_iter(match=_glob_escape(prefix) + "*", count=500)]
            values = await self._client.mget(keys) if keys else []
            return {k.decode(): v for k, v in zip(keys, values) if v is not None}

        return await self._call(run)

    async def counter(self, key: str) -> int:
        value = await self._call(lambda: self._client.get(_counter_key(key)))
        return int(value or 0)

    async def compare_and_set(
        self,
        key: str,
        expected: int,
        value: bytes,
        *,
        channel: str | None = None,
        audit_stream: str | None = None,
        audit: Mapping[str, bytes] | None = None,
        audit_maxlen: int = 10_000,
        new_counter: int | None = None,
    ) -> int:
        keys = [key, _counter_key(key)] + ([audit_stream] if audit_stream and audit else [])
        args: list[Any] = [expected, value, channel or "", audit_maxlen, _new_counter(expected, new_counter)]
        if audit_stream and audit:
            for field_name, field_value in audit.items():
                args += [field_name, field_value]
        ok, current = await self._call(lambda: self._script(keys=keys, args=args))
        if not ok:
            raise Conflict(f"{key} changed: expected epoch {expected}, found {current}", current=int(current))
        return int(current)

    async def take(self, key: str, rate: int, burst: int, want: int, need: int, ttl_s: float) -> Taken:
        args = [rate, burst, want, need, _millis(ttl_s) or 1]
        granted, left, wait, full = await self._call(lambda: self._take(keys=[key], args=args))
        return Taken(int(granted), int(left), int(wait), int(full))

    async def publish(self, channel: str, message: bytes) -> None:
        await self._call(lambda: self._client.publish(channel, message))

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        import redis.exceptions

        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(lambda: pubsub.subscribe(channel))

            async def messages() -> AsyncIterator[bytes]:
                while True:
                    try:
                        message = await pubsub.get_message(timeout=1.0)
                    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                        raise StoreUnavailable(f"subscription to {channel} on {self.name} lost: {exc}") from exc
                    _raise_if_cancelled()
                    if message is not None and message["type"] == "message":
                        yield message["data"]

            yield messages()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def xadd(self, stream: str, fields: Mapping[str, bytes], maxlen: int = 10_000) -> str:
        entry_id = await self._call(lambda: self._client.xadd(stream, dict(fields), maxlen=maxlen, approximate=True))
        return str(entry_id.decode())

    async def xrevrange(self, stream: str, count: int) -> list[StreamEntry]:
        rows = await self._call(lambda: self._client.xrevrange(stream, count=count))
        return [StreamEntry(i.decode(), {k.decode(): v for k, v in f.items()}) for i, f in rows]

    async def ping(self) -> None:
        await self._call(lambda: self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()
        if self._reader is not self._client:
            await self._reader.aclose()


def _new_counter(expected: int, new_counter: int | None) -> int:
    new = expected + 1 if new_counter is None else new_counter
    if new <= expected:
        raise ValueError(f"a compare-and-set must move the counter forward ({expected} -> {new})")
    return new


def _millis(ttl_s: float | None) -> int | None:
    return max(1, int(ttl_s * 1000)) if ttl_s else None


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
