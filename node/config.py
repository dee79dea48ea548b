"""The node's settings (``geogate node``; YAML section ``node:``)."""

from __future__ import annotations

from dataclasses import dataclass

from geogate.shared.config import (
    DEFAULT_DEADLINE_MS,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CHARS,
    LOG_FORMATS,
    LOG_LEVELS,
    check,
    setting,
)

__all__ = ["BACKENDS", "COLORS", "DTYPES", "NodeConfig"]

DEFAULT_NODE_PORT = 8081
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_WAIT_MS = 5.0
DEFAULT_MAX_QUEUE = 4096

COLORS = ("blue", "green")
BACKENDS = ("hf", "modelscope")
DTYPES = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    region: str = setting("local", "region this node serves (reported in X-Region)")
    color: str = setting("blue", "deployment color: blue or green")
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(DEFAULT_NODE_PORT, "port to listen on")
    model: str = setting("demo", "'demo' or 'demo-v2' (the shipped demo models), a model directory, or a hub id")
    backend: str = setting("hf", "hf (transformers, batched) or modelscope (MGeo pipelines)")
    device: str = setting("cpu", "cpu, cuda or cuda:N")
    dtype: str = setting("fp32", "fp32, fp16, bf16 or int8 (int8: dynamic quantization, CPU only)")
    model_version: str | None = setting(None, "override the model's version name <base>-<finetune>-<timestamp>")
    expect_sha256: str | None = setting(None, "refuse to serve unless the weights' SHA-256 equals this")
    max_batch_size: int = setting(DEFAULT_MAX_BATCH_SIZE, "items merged into one forward pass at most")
    max_wait_ms: float = setting(DEFAULT_MAX_WAIT_MS, "how long the oldest queued item waits for a batch to fill")
    max_queue: int = setting(DEFAULT_MAX_QUEUE, "items waiting per task before 429")
    max_batch: int = setting(DEFAULT_MAX_BATCH, "items (pairs or addresses) allowed in one request")
    max_chars: int = setting(DEFAULT_MAX_CHARS, "characters allowed in one address")
    max_body_bytes: int = setting(DEFAULT_MAX_BODY_BYTES, "request body size limit (413 above)")
    max_seq_len: int = setting(128, "token limit per input (longer inputs are truncated)")
    cpu_threads: int = setting(0, "torch threads for CPU inference (0: all cores but one, at least 1)")
    default_deadline_ms: int = setting(DEFAULT_DEADLINE_MS, "deadline when a call sends no X-Deadline-Ms")
    drain_timeout_s: float = setting(DEFAULT_DRAIN_TIMEOUT_S, "on SIGTERM, how long queued work may take")
    warmup: bool = setting(True, "run warm-up batches before reporting ready")
    log_level: str = setting("info", "debug, info, warning or error")
    log_format: str = setting("json", "json (one object per line, for log shippers) or text (for people)")
    access_log: bool = setting(True, "log one line per scoring request (request id, route, status, latency)")
    tls_cert: str | None = setting(None, "PEM certificate (chain) to serve HTTPS; with tls_key")
    tls_key: str | None = setting(None, "PEM private key for HTTPS")
    registry_url: str | None = setting(None, "store to publish heartbeats to (redis://..., redis+sentinel://...); "
                                       "none: no heartbeats")
    advertise_url: str | None = setting(None, "URL gateways reach this node at (default http(s)://HOST:PORT)")
    heartbeat_ttl_s: float = setting(10.0, "heartbeat lifetime; refreshed every third of it")
    fault_delay_ms: float = setting(0.0, "FAULT: extra delay before every forward pass", hidden=True)
    fault_hold_load_file: str | None = setting(None, "FAULT: do not load the model until this file exists",
                                               hidden=True)
    fault_hold_inference_file: str | None = setting(None, "FAULT: no forward pass runs until this file exists",
                                                    hidden=True)
    fault_fail_file: str | None = setting(None, "FAULT: scoring calls answer 500 while this file exists", hidden=True)
    fault_slow_file: str | None = setting(None, "FAULT: with fault_delay_ms, the delay applies only while this file "
                                          "exists", hidden=True)

    def __post_init__(self) -> None:
        check(self.color in COLORS, "color", f"must be one of {COLORS}, not {self.color!r}")
        check(self.backend in BACKENDS, "backend", f"must be one of {BACKENDS}, not {self.backend!r}")
        check(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}, not {self.dtype!r}")
        check(self.log_format in LOG_FORMATS, "log_format", f"must be one of {LOG_FORMATS}")
        check(self.log_level.lower() in LOG_LEVELS, "log_level", f"must be one of {LOG_LEVELS}")
        check(self.device == "cpu" or self.device.startswith("cuda"), "device", "must be cpu, cuda or cuda:N")
        check(0 <= self.port <= 65535, "port", "must be 0..65535")
        for name in ("max_batch_size", "max_queue", "max_batch", "max_chars", "max_body_bytes", "max_seq_len"):
            check(getattr(self, name) > 0, name, "must be positive")
        check(self.max_wait_ms >= 0, "max_wait_ms", "must not be negative")
        check(self.cpu_threads >= 0, "cpu_threads", "must not be negative")
        check(self.default_deadline_ms > 0, "default_deadline_ms", "must be positive")
        check(self.heartbeat_ttl_s > 0, "heartbeat_ttl_s", "must be positive")
        check((self.tls_cert is None) == (self.tls_key is None), "tls_cert", "tls_cert and tls_key go together")
        check(bool(self.region.strip()), "region", "must not be empty")
