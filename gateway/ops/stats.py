"""Recent call statistics for operators: rate, error rate, p50/p99, cache hit ratio.

Prometheus answers these over a scrape interval from outside; the admin API, the switch's
watch window and the gateway heartbeat need them *now*, inside the process. Each series
keeps one bucket per second for the last ``WINDOW_S`` seconds, each with a count, an
error count, a cache-hit count and a coarse log-scale latency histogram, so memory is
bounded and a percentile is read from buckets, not from stored samples.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

__all__ = ["RecentStats", "Snapshot", "StatsBook"]

WINDOW_S = 60
# latency bucket upper bounds in ms: 0.25 ms .. ~33 s, 12% apart (so p99 is within ~12%)
_BOUNDS = [0.25 * 1.12**i for i in range(105)]


class Snapshot(msgspec.Struct, frozen=True):
    """A series over the last ``seconds`` seconds."""

    seconds: int
    count: int
    errors: int
    hits: int
    rps: float
    error_rate: float
    p50_ms: float
    p99_ms: float


@dataclass
class _Second:
    at: int = -1
    count: int = 0
    errors: int = 0
    hits: int = 0
    latency: list[int] | None = None


class RecentStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ring = [_Second() for _ in range(WINDOW_S)]

    def record(self, ms: float, *, ok: bool = True, hit: bool = False) -> None:
        now = int(self._clock())
        slot = self._ring[now % WINDOW_S]
        if slot.at != now:
            slot.at, slot.count, slot.errors, slot.hits, slot.latency = now, 0, 0, 0, None
        slot.count += 1
        slot.errors += not ok
        slot.hits += hit
        if slot.latency is None:
            slot.latency = [0] * (len(_BOUNDS) + 1)
        slot.latency[bisect.bisect_left(_BOUNDS, ms)] += 1

    def snapshot(self, seconds: int = WINDOW_S, *, until: float | None = None) -> Snapshot:
        """The ``seconds`` full seconds before ``until`` (default: now; the current,
        partial second is left out so a rate is not diluted by it)."""
        seconds = max(1, min(seconds, WINDOW_S - 1))
        end = int(self._clock() if until is None else until)
        first = end - seconds
        count = errors = hits = 0
        merged = [0] * (len(_BOUNDS) + 1)
        for slot in self._ring:
            if first <= slot.at < end:
                count, errors, hits = count + slot.count, errors + slot.errors, hits + slot.hits
                if slot.latency:
                    merged = [a + b for a, b in zip(merged, slot.latency)]
        return Snapshot(seconds, count, errors, hits, round(count / seconds, 2),
                        round(errors / count, 4) if count else 0.0,
                        _percentile(merged, count, 0.50), _percentile(merged, count, 0.99))


def _percentile(histogram: list[int], count: int, q: float) -> float:
    if not count:
        return 0.0
    rank = math.ceil(q * count)
    seen = 0
    for i, n in enumerate(histogram):
        seen += n
        if seen >= rank:
            return round(_BOUNDS[min(i, len(_BOUNDS) - 1)], 2)
    return round(_BOUNDS[-1], 2)


class StatsBook:
    """Named series of client calls, created on first use: ``all`` (every scoring call this
    process answered), ``color:<color>``, ``region:<served region>``, ``home:<client region>``.
    Each node keeps its own attempts (``NodeState.recent``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.series: dict[str, RecentStats] = {}

    def __call__(self, name: str) -> RecentStats:
        found = self.series.get(name)
        if found is None:
            found = self.series[name] = RecentStats(self._clock)
        return found

    def snapshot(self, name: str, seconds: int = WINDOW_S) -> Snapshot:
        return self(name).snapshot(seconds)
