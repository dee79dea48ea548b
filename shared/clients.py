"""Calling services ("clients"): who they are, what they may do, and their limits.

A client has a name, API keys stored only as SHA-256 hashes, the tasks it may call, an
optional set of regions its calls must stay in, optional names its TLS client
certificates carry, and limits. Clients come from a YAML file in the gateway's config
(read-only) and from the registry record (managed through ``/admin/v1/clients``; every
change is a registry epoch, so it reaches every gateway through the change feed and is
audited).

An API key reads ``gg_<id>_<secret>``: the id (8 hex digits) names the key in lists and
audit entries without revealing it; only the hash of the whole key is stored.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import yaml

from geogate.shared.errors import InvalidRequest

__all__ = [
    "TASKS",
    "ApiKey",
    "Client",
    "Limits",
    "hash_key",
    "load_clients_file",
    "new_key",
]

TASKS = ("similarity", "parse")


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-client limits; 0 means no limit. Rates are per second and shared by every
    gateway; ``max_concurrent`` is per gateway."""

    rps: float = 0.0  # calls per second
    burst: float = 0.0  # calls allowed at once above the rate (0: one second's worth)
    items_per_s: float = 0.0  # pairs or addresses per second (a cache hit counts cache_hit_cost)
    items_burst: float = 0.0
    daily_quota: float = 0.0  # items per UTC day
    max_concurrent: int = 0  # calls in flight at one gateway

    def over(self, base: Limits) -> Limits:
        """These limits, with ``base``'s wherever these set none."""
        return Limits(**{f: getattr(self, f) or getattr(base, f) for f in self.__struct_fields__})


class ApiKey(msgspec.Struct, frozen=True):
    id: str
    sha256: str
    created_at: str  # ISO 8601, UTC
    expires_at: str = ""  # ISO 8601, UTC; set when the key is rotated out (the overlap's end)
    revoked: bool = False

    @property
    def expires(self) -> float:
        """When it stops being valid, as a POSIX time (inf: never)."""
        return datetime.fromisoformat(self.expires_at).timestamp() if self.expires_at else math.inf

    def valid(self, now: datetime) -> bool:
        return not self.revoked and now.timestamp() < self.expires


class Client(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    tasks: tuple[str, ...] = TASKS
    regions: tuple[str, ...] = ()  # where its calls may be made and served; () = anywhere
    limits: Limits = Limits()
    keys: tuple[ApiKey, ...] = ()
    cert_names: tuple[str, ...] = ()  # TLS client certificate names (CN, DNS or URI SAN) that identify it
    disabled: bool = False  # revoked as a whole: every key and certificate refused


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key(now: datetime | None = None) -> tuple[str, ApiKey]:
    """A fresh key: the plaintext (shown once) and what is stored of it."""
    key_id = secrets.token_hex(4)
    key = f"gg_{key_id}_{secrets.token_urlsafe(24)}"
    created = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    return key, ApiKey(key_id, hash_key(key), created)


def check_client(client: Client) -> Client:
    """Raises InvalidRequest when a client's fields make no sense."""
    if not client.name or len(client.name) > 64 or not all(c.isalnum() or c in "-_." for c in client.name):
        raise InvalidRequest("a client name is 1-64 letters, digits, '-', '_' or '.'")
    unknown = set(client.tasks) - set(TASKS)
    if unknown or not client.tasks:
        raise InvalidRequest(f"tasks must be a non-empty subset of {list(TASKS)}")
    limits = client.limits
    if any(getattr(limits, f) < 0 for f in limits.__struct_fields__):
        raise InvalidRequest("limits must not be negative")
    return client


def load_clients_file(path: str | Path) -> dict[str, Client]:
    """``clients:`` a mapping of name -> {keys_sha256: [...], tasks, regions, limits, cert_names}."""
    data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    out = {}
    for name, spec in (data.get("clients") or {}).items():
        spec = dict(spec or {})
        hashes = spec.pop("keys_sha256", ())
        keys = tuple(ApiKey(f"file{i}", str(h).lower(), "") for i, h in enumerate(hashes))
        try:
            client = msgspec.convert({"name": str(name), **spec, "keys": keys}, Client, from_attributes=True)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{path}: client {name!r}: {exc}") from exc
        out[client.name] = check_client(client)
    return out
