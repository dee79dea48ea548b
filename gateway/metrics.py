"""The gateway's Prometheus metrics (one registry per gateway process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CountGauge", "GatewayMetrics", "children"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def children(metric: Any) -> Callable[..., Any]:
    """``metric.labels`` memoized: the same few label sets are asked for on every call,
    and prometheus-client's lookup takes a lock and builds tuples each time."""
    cache: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        found = cache.get(values)
        if found is None:
            found = cache[values] = metric.labels(*values)
        return found

    return child


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


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("geogate_gateway_requests", "client requests", ["route", "status", "region", "color"],
                                registry=r)
        self.latency = Histogram("geogate_gateway_request_duration_seconds", "client request latency", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_latency = Histogram("geogate_gateway_upstream_duration_seconds", "one upstream attempt",
                                          ["region"], buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_attempts = Counter("geogate_gateway_upstream_attempts", "upstream attempts by outcome",
                                         ["region", "outcome"], registry=r)
        self.retries = Counter("geogate_gateway_retries", "attempts after the first", registry=r)
        self.hedges = Counter("geogate_gateway_hedges", "hedged (twin) attempts", registry=r)
        self.retry_budget_exhausted = Counter("geogate_gateway_retry_budget_exhausted",
                                              "retries refused by the retry budget", registry=r)
        self.failovers = Counter("geogate_gateway_failovers", "calls served outside the home region",
                                 ["from_region", "to_region", "reason"], registry=r)
        self.ejections = Counter("geogate_gateway_ejections", "passive ejections", ["region", "color"], registry=r)
        self.cache = Counter("geogate_gateway_cache_items", "cache lookups per item", ["task", "result"], registry=r)
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
        # Per calling service (issue 9); "anonymous" where anonymous access is on.
        self.client_requests = Counter("geogate_gateway_client_requests", "scoring calls per client by status class",
                                       ["client", "route", "status"], registry=r)
        self.client_items = Counter("geogate_gateway_client_items", "items (pairs, addresses) per client",
                                    ["client", "cache"], registry=r)
        self.client_duration = Histogram("geogate_gateway_client_request_duration_seconds", "latency per client",
                                         ["client"], buckets=_LATENCY_BUCKETS, registry=r)
        self.client_throttled_total = Counter("geogate_gateway_client_throttled",
                                              "calls refused with 429 by a client limit", ["client", "scope"],
                                              registry=r)
        self.limiter_fallback = Counter("geogate_gateway_limiter_fallback",
                                        "times the shared limits became unreachable and local buckets took over",
                                        registry=r)
        self.limiter_local = Gauge("geogate_gateway_limiter_local",
                                   "1 while limits are enforced by this gateway alone (the store is unreachable)",
                                   registry=r)
        self.client_request_count = children(self.client_requests)
        self.client_item_count = children(self.client_items)
        self.client_latency = children(self.client_duration)
        self.client_throttled = children(self.client_throttled_total)
        self.request_count = children(self.requests)
        self.request_latency = children(self.latency)
        self.cache_items = children(self.cache)
        self.attempt_count = children(self.upstream_attempts)
        self.attempt_latency = children(self.upstream_latency)
