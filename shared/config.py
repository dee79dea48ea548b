"""One configuration format for every geogate service: frozen dataclasses built from
defaults < YAML file < ``GEOGATE_*`` environment < command-line flags.

Each config class is a frozen dataclass whose fields carry their help text; the CLI
flags and the environment variable names are derived from the field names, so a
setting cannot exist in one place and be missing in another. ``os.environ`` is read here
and nowhere else.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "GatewayConfig",
    "NodeConfig",
    "add_arguments",
    "build_config",
]

ENV_PREFIX = "GEOGATE_"

DEFAULT_NODE_PORT = 8081
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_WAIT_MS = 5.0
DEFAULT_MAX_QUEUE = 4096
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_CHARS = 256
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_DEADLINE_MS = 10_000
DEFAULT_DRAIN_TIMEOUT_S = 30.0

COLORS = ("blue", "green")
BACKENDS = ("hf", "modelscope")
DTYPES = ("fp32", "fp16", "bf16", "int8")


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message names it."""


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True, slots=True)
class NodeConfig:
    region: str = _opt("local", "region this node serves (reported in X-Region)")
    color: str = _opt("blue", "deployment color: blue or green")
    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(DEFAULT_NODE_PORT, "port to listen on")
    model: str = _opt("demo", "'demo' or 'demo-v2' (the shipped demo models), a model directory, or a hub id")
    backend: str = _opt("hf", "hf (transformers, batched) or modelscope (MGeo pipelines)")
    device: str = _opt("cpu", "cpu, cuda or cuda:N")
    dtype: str = _opt("fp32", "fp32, fp16, bf16 or int8 (int8: dynamic quantization, CPU only)")
    model_version: str | None = _opt(None, "override the model's version name <base>-<finetune>-<timestamp>")
    expect_sha256: str | None = _opt(None, "refuse to serve unless the weights' SHA-256 equals this")
    max_batch_size: int = _opt(DEFAULT_MAX_BATCH_SIZE, "items merged into one forward pass at most")
    max_wait_ms: float = _opt(DEFAULT_MAX_WAIT_MS, "how long the oldest queued item waits for a batch to fill")
    max_queue: int = _opt(DEFAULT_MAX_QUEUE, "items waiting per task before 429")
    max_batch: int = _opt(DEFAULT_MAX_BATCH, "items (pairs or addresses) allowed in one request")
    max_chars: int = _opt(DEFAULT_MAX_CHARS, "characters allowed in one address")
    max_body_bytes: int = _opt(DEFAULT_MAX_BODY_BYTES, "request body size limit (413 above)")
    max_seq_len: int = _opt(128, "token limit per input (longer inputs are truncated)")
    cpu_threads: int = _opt(0, "torch threads for CPU inference (0: all cores but one, at least 1)")
    default_deadline_ms: int = _opt(DEFAULT_DEADLINE_MS, "deadline when a call sends no X-Deadline-Ms")
    drain_timeout_s: float = _opt(DEFAULT_DRAIN_TIMEOUT_S, "on SIGTERM, how long queued work may take")
    warmup: bool = _opt(True, "run warm-up batches before reporting ready")
    log_level: str = _opt("info", "debug, info, warning or error")
    log_format: str = _opt("json", "json (one object per line, for log shippers) or text (for people)")
    access_log: bool = _opt(True, "log one line per scoring request (request id, route, status, latency)")
    tls_cert: str | None = _opt(None, "PEM certificate (chain) to serve HTTPS; with tls_key")
    tls_key: str | None = _opt(None, "PEM private key for HTTPS")
    registry_url: str | None = _opt(None, "store to publish heartbeats to (redis://..., redis+sentinel://...); none: no heartbeats")
    advertise_url: str | None = _opt(None, "URL gateways reach this node at (default http(s)://HOST:PORT)")
    heartbeat_ttl_s: float = _opt(10.0, "heartbeat lifetime; refreshed every third of it")
    # Fault injection, for tests and failover drills only.
    fault_delay_ms: float = _opt(0.0, "FAULT: extra delay before every forward pass")
    fault_hold_load_file: str | None = _opt(None, "FAULT: do not load the model until this file exists")
    fault_hold_inference_file: str | None = _opt(None, "FAULT: no forward pass runs until this file exists")
    fault_fail_file: str | None = _opt(None, "FAULT: scoring calls answer 500 while this file exists")
    fault_slow_file: str | None = _opt(None, "FAULT: with fault_delay_ms, the delay applies only while this file exists")

    def __post_init__(self) -> None:
        _check(self.color in COLORS, "color", f"must be one of {COLORS}, not {self.color!r}")
        _check(self.backend in BACKENDS, "backend", f"must be one of {BACKENDS}, not {self.backend!r}")
        _check(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}, not {self.dtype!r}")
        _check(self.log_format in LOG_FORMATS, "log_format", f"must be one of {LOG_FORMATS}")
        _check(self.device == "cpu" or self.device.startswith("cuda"), "device", "must be cpu, cuda or cuda:N")
        _check(0 <= self.port <= 65535, "port", "must be 0..65535")
        for name in ("max_batch_size", "max_queue", "max_batch", "max_chars", "max_body_bytes", "max_seq_len"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(self.max_wait_ms >= 0, "max_wait_ms", "must not be negative")
        _check(self.cpu_threads >= 0, "cpu_threads", "must not be negative")
        _check(self.default_deadline_ms > 0, "default_deadline_ms", "must be positive")
        _check(self.heartbeat_ttl_s > 0, "heartbeat_ttl_s", "must be positive")
        _check((self.tls_cert is None) == (self.tls_key is None), "tls_cert", "tls_cert and tls_key go together")
        _check(bool(self.region.strip()), "region", "must not be empty")


DEFAULT_GATEWAY_PORT = 8080
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The gateway's scalar settings; its topology (regions, countries, nodes) is read
    from the same YAML file's top-level ``regions:``, ``countries:`` and ``nodes:``."""

    region: str = _opt("local", "region this gateway runs in (also the default client region)")
    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(DEFAULT_GATEWAY_PORT, "port to listen on")
    workers: int = _opt(1, "processes serving the same port (SO_REUSEPORT); each keeps its own metrics")
    tls_cert: str | None = _opt(None, "PEM certificate (chain) for HTTPS; with tls_key")
    tls_key: str | None = _opt(None, "PEM private key for HTTPS")
    upstream_ca: str | None = _opt(None, "CA bundle to verify nodes served over HTTPS")
    registry_url: str | None = _opt(None, "registry store (redis://, redis+sentinel://); none: embedded")
    cache_url: str | None = _opt(None, "result cache store (default: the registry's)")
    cache_read_url: str | None = _opt(None, "replica to read the cache from (default: cache_url)")
    namespace: str = _opt("geogate", "key prefix in the stores")
    geoip_db: str | None = _opt(None, "MaxMind-format .mmdb (Country or City); none: every client is default_region")
    trusted_proxies: str = _opt("", "comma-separated CIDRs whose X-Forwarded-For is believed")
    cdn_country_header: str | None = _opt(None, "header with the client's ISO country, set by a trusted CDN")
    node_networks: str = _opt("127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
                              "networks a node may register itself from by heartbeat (its URL must be an IP "
                              "address in one); configured nodes are not limited")
    default_region: str | None = _opt(None, "region of unknown and private addresses (default: region)")
    probe_interval_s: float = _opt(1.0, "active /health/ready probe period per node (with jitter)")
    deep_probe_interval_s: float = _opt(5.0, "period of the probe that scores a known pair (0: off)")
    healthy_after: int = _opt(1, "consecutive good probes that make a node healthy")
    unhealthy_after: int = _opt(2, "consecutive failed probes that make a node unhealthy")
    eject_after: int = _opt(3, "consecutive failed calls that eject a node (passive)")
    eject_base_s: float = _opt(1.0, "first ejection time; doubles on each repeat, up to 30 s")
    max_ejection_percent: float = _opt(50.0, "never eject more than this share of a region's nodes")
    connect_timeout_ms: int = _opt(300, "upstream connect timeout")
    attempt_timeout_ms: int = _opt(5000, "one upstream attempt's timeout (bounded by the deadline)")
    max_attempts: int = _opt(3, "attempts per call (first try plus retries on other nodes or regions)")
    retry_budget_percent: float = _opt(20.0, "retries allowed as a share of recent calls (plus a floor of 10/s)")
    hedge_after_ms: float = _opt(0.0, "send a second attempt if the first has not answered after this (0: off)")
    hedge_p95: bool = _opt(False, "hedge after the region's recent p95 latency when it exceeds hedge_after_ms")
    hedge_budget_percent: float = _opt(10.0, "hedged attempts allowed as a share of recent calls")
    default_deadline_ms: int = _opt(DEFAULT_DEADLINE_MS, "deadline when a call sends no X-Deadline-Ms")
    max_batch: int = _opt(DEFAULT_MAX_BATCH, "items (pairs or addresses) allowed in one request")
    max_chars: int = _opt(DEFAULT_MAX_CHARS, "characters allowed in one address")
    max_body_bytes: int = _opt(DEFAULT_MAX_BODY_BYTES, "request body size limit (413 above)")
    cache_ttl_s: float = _opt(86_400.0, "result cache entry lifetime (0: no caching)")
    cache_local_items: int = _opt(10_000, "results kept in this process in front of the shared cache (0: none)")
    drain_timeout_s: float = _opt(DEFAULT_DRAIN_TIMEOUT_S, "on SIGTERM, how long in-flight calls may take")
    log_level: str = _opt("info", "debug, info, warning or error")
    log_format: str = _opt("json", "json (one object per line, for log shippers) or text (for people)")
    access_log: bool = _opt(True, "log one JSON line per request (with its request id)")
    # -- admin API (issue 6) --
    admin_tokens_file: str | None = _opt(None, "YAML file of admin tokens as SHA-256 hashes with name and role; "
                                         "none: every admin call is refused (401)")
    admin_port: int = _opt(0, "serve /admin/v1 on this port only (0: on the main port)")
    admin_tls_only: bool = _opt(False, "refuse admin calls that did not arrive over TLS")
    heartbeat_ttl_s: float = _opt(6.0, "this gateway's heartbeat lifetime in the store (refreshed every third)")
    switch_ack_timeout_s: float = _opt(5.0, "how long a switch waits for every live gateway to apply it")
    switch_min_ready: int = _opt(1, "pre-check: healthy nodes of the target color each active region needs")
    golden_file: str | None = _opt(None, "extra golden pairs/addresses (JSON) added to the shipped set")
    golden_max_disagreement: float = _opt(0.05, "pre-check: share of golden items whose label/elements may differ")
    golden_max_drift: float = _opt(0.25, "pre-check: largest allowed score difference on a golden pair")
    watch_window_s: float = _opt(30.0, "after a switch, how long the new color is compared with the old (0: off)")
    watch_max_error_rate: float = _opt(0.05, "watch: roll back when the new color's error rate exceeds the old "
                                       "color's by this much")
    watch_p99_factor: float = _opt(3.0, "watch: roll back when the new color's p99 exceeds this times the old's")
    watch_min_calls: int = _opt(20, "watch: calls on the new color before it is judged")
    retention_s: float = _opt(3600.0, "how long the previous color is kept warm for a rollback (reported)")
    drill_kill: bool = _opt(False, "allow kill drills: SIGKILL a region's nodes by the pid in their heartbeat "
                            "(only where nodes run on this host and something restarts them, as under geogate up)")
    # -- client access (issue 9) --
    allow_anonymous: bool = _opt(False, "serve scoring calls that bring no API key or client certificate (as client "
                                 "'anonymous', with the client_* limits)")
    clients_file: str | None = _opt(None, "YAML file of clients (API keys as SHA-256 hashes, tasks, regions, limits); "
                                    "more are managed through /admin/v1/clients")
    client_ca: str | None = _opt(None, "CA file: a TLS client certificate it signed identifies a client by its CN, "
                                 "DNS name or URI (mutual TLS; needs tls_cert)")
    client_rps: float = _opt(0.0, "default calls per second per client, shared by every gateway (0: none)")
    client_burst: float = _opt(0.0, "default calls allowed at once above the rate (0: one second's worth)")
    client_items_per_s: float = _opt(0.0, "default items (pairs, addresses) per second per client (0: none)")
    client_items_burst: float = _opt(0.0, "default items allowed at once above the item rate (0: one second's worth)")
    client_daily_quota: float = _opt(0.0, "default items per client per UTC day (0: none)")
    client_max_concurrent: int = _opt(0, "default calls one client may have in flight at this gateway (0: any)")
    rate_limit_headers: str = _opt("always", "X-RateLimit-* on every answer of a rate-limited client (always) "
                                   "or only on its 429s (refusals: a little cheaper per call)")
    cache_hit_cost: float = _opt(0.1, "what an item served from the cache counts against item rates and quotas")
    limit_fallback_factor: float = _opt(1.0, "while the store is unreachable, each gateway alone enforces the "
                                        "limits times this (fail open with a local cap)")

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port", "must be 0..65535")
        _check(0 <= self.admin_port <= 65535, "admin_port", "must be 0..65535")
        _check(self.log_format in LOG_FORMATS, "log_format", f"must be one of {LOG_FORMATS}")
        _check(bool(self.region.strip()), "region", "must not be empty")
        _check((self.tls_cert is None) == (self.tls_key is None), "tls_cert", "tls_cert and tls_key go together")
        for name in ("workers", "probe_interval_s", "eject_base_s", "max_batch", "max_chars", "max_body_bytes",
                     "connect_timeout_ms", "attempt_timeout_ms", "max_attempts", "healthy_after",
                     "unhealthy_after", "eject_after", "default_deadline_ms"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(0 <= self.max_ejection_percent <= 100, "max_ejection_percent", "must be within 0..100")
        _check(self.rate_limit_headers in ("always", "refusals"), "rate_limit_headers", "must be always or refusals")
        _check(self.client_ca is None or self.tls_cert is not None, "client_ca", "mutual TLS needs tls_cert and tls_key")
        for name in ("client_rps", "client_burst", "client_items_per_s", "client_items_burst", "client_daily_quota",
                     "client_max_concurrent", "cache_hit_cost", "limit_fallback_factor"):
            _check(getattr(self, name) >= 0, name, "must not be negative")

    @property
    def home_default(self) -> str:
        return self.default_region or self.region


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


C = TypeVar("C")


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """One ``--flag`` per field; defaults stay None so only given flags override."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata.get('help', '')} [env {env}; default {f.default!r}]"
        parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def build_config(
    cls: type[C],
    *,
    section: str,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Merge the layers and coerce strings to the fields' types; unknown keys are errors."""
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}

    if file is not None:
        data = _read_yaml(file)
        layer = data[section] if isinstance(data.get(section), dict) else data
        for key, raw in layer.items():
            if key not in fields:
                if isinstance(raw, dict):
                    continue  # another service's section of a shared file
                raise ConfigError(f"{file}: unknown setting {key!r} (known: {', '.join(sorted(fields))})")
            values[key] = _coerce(key, raw, hints[key])
    for name in fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(ENV_PREFIX + name.upper(), raw, hints[name])
    for name, raw in (overrides or {}).items():
        if raw is not None:
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _coerce("--" + name.replace("_", "-"), raw, hints[name])
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, raw: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
            return None
        hint = args[0]
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if hint is int:
            if isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer():
                raise ValueError(f"not an integer: {raw!r}")
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return str(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    return raw
