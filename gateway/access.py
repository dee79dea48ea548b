"""Who is calling, and may they: an API key, a TLS client certificate, or nobody.

A key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and is looked up
by its SHA-256 among the clients of the config file and of the registry snapshot (the
lookup table is rebuilt when the snapshot's epoch changes, so a key added, rotated or
revoked through the admin API counts at every gateway as soon as it has the epoch). A
verified client certificate (``client_ca``) names a client by its CN or a DNS name. A
call with neither is the client ``anonymous`` where ``allow_anonymous`` is set, and 401
elsewhere; a key that is presented but unknown, expired or revoked is always 401, never
silently anonymous. A client may be limited to some tasks and to some regions (403).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from shared.clients import TASKS, Client, Limits, hash_key
from shared.config import GatewayConfig
from shared.errors import Forbidden, Unauthorized
from shared.registry import RegistryWatcher

__all__ = ["ANONYMOUS", "UNIDENTIFIED", "Access", "Caller"]

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    tasks: frozenset[str]
    regions: frozenset[str]  # empty: anywhere
    limits: Limits
    via: str = ""  # key:<id>, cert:<name> or anonymous

    @property
    def shared(self) -> bool:
        """Whether any of its limits lives in the shared store (the limiter is asked)."""
        return bool(self.limits.rps or self.limits.items_per_s or self.limits.daily_quota)


UNIDENTIFIED = Caller("unidentified", frozenset(), frozenset(), Limits(), "none")  # refused with 401


@dataclass(frozen=True, slots=True)
class _Book:
    epoch: int
    keys: dict[str, tuple[Caller, float]] = field(default_factory=dict)  # sha256 -> (caller, expires at, POSIX)
    certs: dict[str, Caller] = field(default_factory=dict)  # certificate name -> caller


class Access:
    def __init__(self, config: GatewayConfig, watcher: RegistryWatcher, file_clients: dict[str, Client]) -> None:
        self.region = config.region
        self._mtls = config.client_ca is not None
        self._watcher = watcher
        self._file_clients = file_clients
        self.defaults = Limits(rps=config.client_rps, burst=config.client_burst,
                               items_per_s=config.client_items_per_s, items_burst=config.client_items_burst,
                               daily_quota=config.client_daily_quota, max_concurrent=config.client_max_concurrent)
        self.anonymous = (Caller(ANONYMOUS, frozenset(TASKS), frozenset(), self.defaults, ANONYMOUS)
                          if config.allow_anonymous else None)
        self._book = _Book(-1)

    def clients(self) -> dict[str, tuple[Client, str]]:
        """Every client by name with where it is defined (``file`` or ``registry``)."""
        out = {name: (client, "file") for name, client in self._file_clients.items()}
        out.update({name: (client, "registry") for name, client in self._watcher.snapshot.clients.items()})
        return out

    def _current(self) -> _Book:
        epoch = self._watcher.snapshot.epoch
        if self._book.epoch != epoch:
            book = _Book(epoch)
            for client, _ in self.clients().values():
                if client.disabled:
                    continue
                caller = Caller(client.name, frozenset(client.tasks), frozenset(client.regions),
                                client.limits.over(self.defaults))
                for key in client.keys:
                    if not key.revoked:
                        book.keys[key.sha256] = (_with_via(caller, f"key:{key.id}"), key.expires)
                for name in (client.name, *client.cert_names):  # a certificate CN that is the name identifies it too
                    book.certs[name] = _with_via(caller, f"cert:{name}")
            self._book = book
        return self._book

    def identify(self, request: web.Request) -> Caller:
        """The caller, or Unauthorized."""
        key = _presented_key(request)
        if key is not None:
            found = self._current().keys.get(_hash(key))
            if found is None or time.time() >= found[1]:
                raise Unauthorized("unknown, expired or revoked API key")
            return found[0]
        names = _certificate_names(request) if self._mtls else []
        if names:
            certs = self._current().certs
            for name in names:
                if name in certs:
                    return certs[name]
            raise Unauthorized("the client certificate names no client of this gateway")
        if self.anonymous is not None:
            return self.anonymous
        raise Unauthorized("an API key (Authorization: Bearer or X-API-Key) or a client certificate is required")

    def authorize(self, caller: Caller, task: str) -> None:
        if task not in caller.tasks:
            raise Forbidden(f"client {caller.name!r} may not call {task} (it may call: {', '.join(sorted(caller.tasks))})")
        if caller.regions and self.region not in caller.regions:
            raise Forbidden(f"client {caller.name!r} may only be served in {', '.join(sorted(caller.regions))}; "
                            f"this gateway is in {self.region}")


# The same few keys arrive on call after call: remembering their hashes saves a SHA-256
# per call. Bounded, so a flood of made-up keys only evicts.
_hash = functools.lru_cache(maxsize=4096)(hash_key)


def _with_via(caller: Caller, via: str) -> Caller:
    return Caller(caller.name, caller.tasks, caller.regions, caller.limits, via)


def _presented_key(request: web.Request) -> str | None:
    headers = request.headers
    key = headers.get("X-API-Key")
    if key is None:
        auth = headers.get("Authorization")
        if auth is None:
            return None
        scheme, _, key = auth.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("Authorization must be 'Bearer <API key>'")
    return key.strip()


def _certificate_names(request: web.Request) -> list[str]:
    """The CN and DNS names of a client certificate the TLS layer verified, if any."""
    transport = request.transport
    cert: dict[str, Any] | None = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return []
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names + [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
