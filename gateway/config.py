"""The gateway's settings (``geogate gateway``; YAML section ``gateway:``), in sections
that each component takes whole: the process's own settings at the top, then ``store``,
``geo``, ``requests``, ``health``, ``upstream``, ``cache``, ``access`` and ``admin``.

The topology (regions, countries, nodes) is read from the same YAML file's top-level
``regions:``, ``countries:`` and ``nodes:`` (``routing.topology``).
"""

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
    section,
    setting,
)

__all__ = [
    "AccessSettings",
    "AdminSettings",
    "CacheSettings",
    "GatewayConfig",
    "GeoSettings",
    "HealthSettings",
    "RequestSettings",
    "StoreSettings",
    "UpstreamSettings",
]

DEFAULT_GATEWAY_PORT = 8080


def _positive(settings: object, *names: str) -> None:
    for name in names:
        check(getattr(settings, name) > 0, name, "must be positive")


def _not_negative(settings: object, *names: str) -> None:
    for name in names:
        check(getattr(settings, name) >= 0, name, "must not be negative")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    registry_url: str | None = setting(None, "registry store (redis://, redis+sentinel://); none: embedded")
    cache_url: str | None = setting(None, "result cache store (default: the registry's)")
    cache_read_url: str | None = setting(None, "replica to read the cache from (default: cache_url)")
    namespace: str = setting("geogate", "key prefix in the stores")


@dataclass(frozen=True, slots=True)
class GeoSettings:
    geoip_db: str | None = setting(None, "MaxMind-format .mmdb (Country or City); none: every client is "
                                   "default_region")
    default_region: str | None = setting(None, "region of unknown and private addresses (default: region)")
    trusted_proxies: str = setting("", "comma-separated CIDRs whose X-Forwarded-For is believed")
    cdn_country_header: str | None = setting(None, "header with the client's ISO country, set by a trusted CDN")


@dataclass(frozen=True, slots=True)
class RequestSettings:
    max_batch: int = setting(DEFAULT_MAX_BATCH, "items (pairs or addresses) allowed in one request")
    max_chars: int = setting(DEFAULT_MAX_CHARS, "characters allowed in one address")
    max_body_bytes: int = setting(DEFAULT_MAX_BODY_BYTES, "request body size limit (413 above)")
    default_deadline_ms: int = setting(DEFAULT_DEADLINE_MS, "deadline when a call sends no X-Deadline-Ms")

    def __post_init__(self) -> None:
        _positive(self, "max_batch", "max_chars", "max_body_bytes", "default_deadline_ms")


@dataclass(frozen=True, slots=True)
class HealthSettings:
    node_networks: str = setting("127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
                                 "networks a node may register itself from by heartbeat (its URL must be an IP "
                                 "address in one); configured nodes are not limited")
    probe_interval_s: float = setting(1.0, "active /health/ready probe period per node (with jitter)")
    deep_probe_interval_s: float = setting(5.0, "period of the probe that scores a known pair (0: off)")
    healthy_after: int = setting(1, "consecutive good probes that make a node healthy")
    unhealthy_after: int = setting(2, "consecutive failed probes that make a node unhealthy")
    eject_after: int = setting(3, "consecutive failed calls that eject a node (passive)")
    eject_base_s: float = setting(1.0, "first ejection time; doubles on each repeat, up to 30 s")
    max_ejection_percent: float = setting(50.0, "never eject more than this share of a region's nodes")

    def __post_init__(self) -> None:
        _positive(self, "probe_interval_s", "eject_base_s", "healthy_after", "unhealthy_after", "eject_after")
        _not_negative(self, "deep_probe_interval_s")
        check(0 <= self.max_ejection_percent <= 100, "max_ejection_percent", "must be within 0..100")


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    upstream_ca: str | None = setting(None, "CA bundle to verify nodes served over HTTPS")
    connect_timeout_ms: int = setting(300, "upstream connect timeout")
    attempt_timeout_ms: int = setting(5000, "one upstream attempt's timeout (bounded by the deadline)")
    max_attempts: int = setting(3, "attempts per call (first try plus retries on other nodes or regions)")
    retry_budget_percent: float = setting(20.0, "retries allowed as a share of recent calls (plus a floor of 10/s)")
    hedge_after_ms: float = setting(0.0, "send a second attempt if the first has not answered after this (0: off)")
    hedge_p95: bool = setting(False, "hedge after the region's recent p95 latency when it exceeds hedge_after_ms")
    hedge_budget_percent: float = setting(10.0, "hedged attempts allowed as a share of recent calls")

    def __post_init__(self) -> None:
        _positive(self, "connect_timeout_ms", "attempt_timeout_ms", "max_attempts")
        _not_negative(self, "retry_budget_percent", "hedge_after_ms", "hedge_budget_percent")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    cache_ttl_s: float = setting(86_400.0, "result cache entry lifetime (0: no caching)")
    cache_local_items: int = setting(10_000, "results kept in this process in front of the shared cache (0: none)")

    def __post_init__(self) -> None:
        _not_negative(self, "cache_ttl_s", "cache_local_items")


@dataclass(frozen=True, slots=True)
class AccessSettings:
    allow_anonymous: bool = setting(False, "serve scoring calls that bring no API key or client certificate (as "
                                    "client 'anonymous', with the client_* limits)")
    clients_file: str | None = setting(None, "YAML file of clients (API keys as SHA-256 hashes, tasks, regions, "
                                       "limits); more are managed through /admin/v1/clients")
    client_ca: str | None = setting(None, "CA file: a TLS client certificate it signed identifies a client by its "
                                    "CN, DNS name or URI (mutual TLS; needs tls_cert)")
    client_rps: float = setting(0.0, "default calls per second per client, shared by every gateway (0: none)")
    client_burst: float = setting(0.0, "default calls allowed at once above the rate (0: one second's worth)")
    client_items_per_s: float = setting(0.0, "default items (pairs, addresses) per second per client (0: none)")
    client_items_burst: float = setting(0.0, "default items allowed at once above the item rate (0: one second's "
                                        "worth)")
    client_daily_quota: float = setting(0.0, "default items per client per UTC day (0: none)")
    client_max_concurrent: int = setting(0, "default calls one client may have in flight at this gateway (0: any)")
    rate_limit_headers: str = setting("always", "X-RateLimit-* on every answer of a rate-limited client (always) "
                                      "or only on its 429s (refusals: a little cheaper per call)")
    cache_hit_cost: float = setting(0.1, "what an item served from the cache counts against item rates and quotas")
    limit_fallback_factor: float = setting(1.0, "while the store is unreachable, each gateway alone enforces the "
                                           "limits times this (fail open with a local cap)")

    def __post_init__(self) -> None:
        check(self.rate_limit_headers in ("always", "refusals"), "rate_limit_headers", "must be always or refusals")
        _not_negative(self, "client_rps", "client_burst", "client_items_per_s", "client_items_burst",
                      "client_daily_quota", "client_max_concurrent", "cache_hit_cost", "limit_fallback_factor")


@dataclass(frozen=True, slots=True)
class AdminSettings:
    admin_tokens_file: str | None = setting(None, "YAML file of admin tokens as SHA-256 hashes with name and role; "
                                            "none: every admin call is refused (401)")
    admin_port: int = setting(0, "serve /admin/v1 on this port only (0: on the main port)")
    admin_tls_only: bool = setting(False, "refuse admin calls that did not arrive over TLS")
    heartbeat_ttl_s: float = setting(6.0, "this gateway's heartbeat lifetime in the store (refreshed every third)")
    switch_ack_timeout_s: float = setting(5.0, "how long a switch waits for every live gateway to apply it")
    switch_min_ready: int = setting(1, "pre-check: healthy nodes of the target color each active region needs")
    golden_file: str | None = setting(None, "extra golden pairs/addresses (JSON) added to the shipped set")
    golden_max_disagreement: float = setting(0.05, "pre-check: share of golden items whose label/elements may "
                                             "differ")
    golden_max_drift: float = setting(0.25, "pre-check: largest allowed score difference on a golden pair")
    watch_window_s: float = setting(30.0, "after a switch, how long the new color is compared with the old (0: off)")
    watch_max_error_rate: float = setting(0.05, "watch: roll back when the new color's error rate exceeds the old "
                                          "color's by this much")
    watch_p99_factor: float = setting(3.0, "watch: roll back when the new color's p99 exceeds this times the old's")
    watch_min_calls: int = setting(20, "watch: calls on the new color before it is judged")
    retention_s: float = setting(3600.0, "how long the previous color is kept warm for a rollback (reported)")
    drill_kill: bool = setting(False, "allow kill drills: SIGKILL a region's nodes by the pid in their heartbeat "
                               "(only where nodes run on this host and something restarts them, as under geogate up)")

    def __post_init__(self) -> None:
        check(0 <= self.admin_port <= 65535, "admin_port", "must be 0..65535")
        _positive(self, "heartbeat_ttl_s", "switch_ack_timeout_s")
        _not_negative(self, "switch_min_ready", "watch_window_s", "watch_min_calls", "retention_s")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The process's own settings, then one section per component."""

    region: str = setting("local", "region this gateway runs in (also the default client region)")
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(DEFAULT_GATEWAY_PORT, "port to listen on")
    workers: int = setting(1, "processes serving the same port (SO_REUSEPORT); each keeps its own metrics")
    tls_cert: str | None = setting(None, "PEM certificate (chain) for HTTPS; with tls_key")
    tls_key: str | None = setting(None, "PEM private key for HTTPS")
    drain_timeout_s: float = setting(DEFAULT_DRAIN_TIMEOUT_S, "on SIGTERM, how long in-flight calls may take")
    log_level: str = setting("info", "debug, info, warning or error")
    log_format: str = setting("json", "json (one object per line, for log shippers) or text (for people)")
    access_log: bool = setting(True, "log one JSON line per request (with its request id)")
    store: StoreSettings = section(StoreSettings, "where the registry, the result cache and the limits live")
    geo: GeoSettings = section(GeoSettings, "how a client's region is found")
    requests: RequestSettings = section(RequestSettings, "what one client call may ask")
    health: HealthSettings = section(HealthSettings, "which nodes may take calls: active probes and passive "
                                     "ejection")
    upstream: UpstreamSettings = section(UpstreamSettings, "the call to a node: timeouts, retries, hedging")
    cache: CacheSettings = section(CacheSettings, "the versioned result cache")
    access: AccessSettings = section(AccessSettings, "who may call, and how much")
    admin: AdminSettings = section(AdminSettings, "the admin API: tokens, switches, watch window, drills")

    def __post_init__(self) -> None:
        check(0 <= self.port <= 65535, "port", "must be 0..65535")
        check(self.log_format in LOG_FORMATS, "log_format", f"must be one of {LOG_FORMATS}")
        check(self.log_level.lower() in LOG_LEVELS, "log_level", f"must be one of {LOG_LEVELS}")
        check(bool(self.region.strip()), "region", "must not be empty")
        check((self.tls_cert is None) == (self.tls_key is None), "tls_cert", "tls_cert and tls_key go together")
        _positive(self, "workers")
        check(self.access.client_ca is None or self.tls_cert is not None, "client_ca",
              "mutual TLS needs tls_cert and tls_key")

    @property
    def home_default(self) -> str:
        """The region of clients whose address says nothing."""
        return self.geo.default_region or self.region
