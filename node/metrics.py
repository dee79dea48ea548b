"""The node's Prometheus metrics, on a registry of its own (one per app, so tests can run
several nodes in one process without clashing)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from geogate.node.batcher import BatchObserver

__all__ = ["NodeMetrics"]

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class NodeMetrics(BatchObserver):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "geogate_node_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "geogate_node_request_duration_seconds", "HTTP request latency", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.items = Counter("geogate_node_items", "items (pairs or addresses) computed", ["task"], registry=r)
        self.batch_size = Histogram(
            "geogate_node_batch_size", "items per forward pass", ["task"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "geogate_node_inference_seconds", "time of one forward pass and decoding", ["task"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue = Gauge("geogate_node_queue_depth", "items waiting for a batch", ["task"], registry=r)
        self.in_flight_items = Gauge(
            "geogate_node_in_flight_items", "items in batches being prepared or computed", ["task"], registry=r
        )
        self.dropped_items = Counter(
            "geogate_node_dropped_items", "items not computed: deadline, cancelled, queue_full",
            ["task", "reason"], registry=r,
        )
        self.ready = Gauge("geogate_node_ready", "1 when loaded, warmed and not draining", registry=r)
        self.model_info = Gauge(
            "geogate_node_model_info", "the model this node serves (value 1)",
            ["model_version", "checksum", "color", "region", "device", "dtype", "backend"], registry=r,
        )
        self.gpu_memory = Gauge(
            "geogate_node_gpu_memory_bytes", "CUDA memory held by torch", ["kind"], registry=r
        )

    # BatchObserver
    def batch_done(self, task: str, size: int, seconds: float) -> None:
        self.items.labels(task).inc(size)
        self.batch_size.labels(task).observe(size)
        self.inference.labels(task).observe(seconds)

    def dropped(self, task: str, reason: str, items: int) -> None:
        self.dropped_items.labels(task, reason).inc(items)

    def queue_depth(self, task: str, items: int) -> None:
        self.queue.labels(task).set(items)

    def in_flight(self, task: str, items: int) -> None:
        self.in_flight_items.labels(task).set(items)

    def render(self) -> bytes:
        return generate_latest(self.registry)
