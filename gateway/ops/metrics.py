"""The gateway's Prometheus metrics (one registry per gateway process)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

__all__ = ["CountGauge", "FastCounter", "FastHistogram", "GatewayMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CountGauge:
    """A labelled gauge set from a whole count at once. A label set missing from the latest
    count reads 0 rather than keeping its last value (nodes that all left must show as 0
    healthy, so that the alerts on it fire)."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._seen: set[tuple[str, ...]] = set()

    def publish(self, counts: dict[tuple[str, ...], int]) -> None:
        self._seen |= counts.keys()
        for labels in self._seen:
            self.gauge.labels(*labels).set(counts.get(labels, 0))


class FastCounter:
    """A labelled counter kept as plain numbers and turned into a metric family only when
    scraped: prometheus-client's children take a lock on every update, which the
    gateway's per-call path pays several times a call. Updated and collected on the event
    loop's thread only."""

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in sorted(self.values.items()):
            family.add_metric(list(labels), value)
        yield family


class FastHistogram:
    """A labelled histogram kept the same way as FastCounter."""

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry,
                 buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.name, self.documentation, self.labels, self.buckets = name, documentation, labels, buckets
        self.values: dict[tuple[str, ...], list[float]] = {}  # per-bucket counts (+Inf last), then the sum
        registry.register(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self.values.get(labels)
        if counts is None:
            counts = self.values[labels] = [0.0] * (len(self.buckets) + 2)
        counts[bisect.bisect_left(self.buckets, value)] += 1
        counts[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        bounds = [floatToGoString(b) for b in self.buckets] + ["+Inf"]
        for labels, counts in sorted(self.values.items()):
            family.add_metric(list(labels), list(zip(bounds, itertools.accumulate(counts[:-1]))), counts[-1])
        yield family


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # Updated on every call or attempt: lock-free (FastCounter, FastHistogram)
        self.requests = FastCounter("geogate_gateway_requests", "client requests", ["route", "status", "region", "color"],
                                    r)
        self.latency = FastHistogram("geogate_gateway_request_duration_seconds", "client request latency", ["route"], r)
        self.attempt_latency = FastHistogram("geogate_gateway_upstream_duration_seconds", "one upstream attempt",
                                             ["region"], r)
        self.attempt_count = FastCounter("geogate_gateway_upstream_attempts", "upstream attempts by outcome",
                                         ["region", "outcome"], r)
        self.retries = Counter("geogate_gateway_retries", "attempts after the first", registry=r)
        self.hedges = Counter("geogate_gateway_hedges", "hedged (twin) attempts", registry=r)
        self.retry_budget_exhausted = Counter("geogate_gateway_retry_budget_exhausted",
                                              "retries refused by the retry budget", registry=r)
        self.failovers = Counter("geogate_gateway_failovers", "calls served outside the home region",
                                 ["from_region", "to_region", "reason"], registry=r)
        self.ejections = Counter("geogate_gateway_ejections", "passive ejections", ["region", "color"], registry=r)
        self.cache = FastCounter("geogate_gateway_cache_items", "cache lookups per item", ["task", "result"], r)
        self.registry_epoch = Gauge("geogate_gateway_registry_epoch", "epoch of the registry snapshot", registry=r)
        self.registry_age = Gauge("geogate_gateway_registry_snapshot_age_seconds",
                                  "seconds since the store last confirmed the snapshot", registry=r)
        self.healthy_nodes = CountGauge(Gauge("geogate_gateway_healthy_nodes", "nodes taking calls",
                                              ["region", "color"], registry=r))
        self.probe_latency = Histogram("geogate_gateway_probe_duration_seconds", "active health probe latency",
                                       ["region"], buckets=_LATENCY_BUCKETS, registry=r)
        self.version_mismatch = Counter("geogate_gateway_version_mismatch",
                                        "answers rejected because X-Model-Version differed (fencing)", ["region"],
                                        registry=r)
        self.version_skew = CountGauge(Gauge("geogate_gateway_version_skew_nodes",
                                             "nodes serving another version than the registry names for their color",
                                             ["region", "color"], registry=r))
        # Per calling service; "anonymous" where anonymous access is on.
        self.client_requests = FastCounter("geogate_gateway_client_requests", "scoring calls per client by status "
                                           "class", ["client", "route", "status"], r)
        self.client_items = FastCounter("geogate_gateway_client_items", "items (pairs, addresses) per client",
                                        ["client", "cache"], r)
        self.client_latency = FastHistogram("geogate_gateway_client_request_duration_seconds", "latency per client",
                                            ["client"], r)
        self.client_throttled = FastCounter("geogate_gateway_client_throttled",
                                            "calls refused with 429 by a client limit", ["client", "scope"], r)
        self.limiter_fallback = Counter("geogate_gateway_limiter_fallback",
                                        "times the shared limits became unreachable and local buckets took over",
                                        registry=r)
        self.limiter_local = Gauge("geogate_gateway_limiter_local",
                                   "1 while limits are enforced by this gateway alone (the store is unreachable)",
                                   registry=r)

