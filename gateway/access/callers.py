"""Who is calling, and may they: an API key, a TLS client certificate, or nobody.

A key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and is looked up
by its SHA-256 among the clients of the config file and of the registry snapshot (the
lookup table is rebuilt when the snapshot's epoch changes, so a key added, rotated or
revoked through the admin API counts at every gateway as soon as it has the epoch). A
verified client certificate (``client_ca``) names a client by its CN, a DNS name or a URI
(a SPIFFE id). A call with neither is the client ``anonymous`` where ``allow_anonymous``
is set, and 401 elsewhere; a key that is presented but unknown, expired or revoked is
always 401, never silently anonymous. A client may be limited to some tasks and to some
regions (403).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from geogate.gateway.config import AccessSettings
from geogate.shared.clients import TASKS, Client, Limits, hash_key
from geogate.shared.errors import Forbidden, Unauthorized
from geogate.shared.registry import RegistryWatcher

__all__ = ["ANONYMOUS", "UNIDENTIFIED", "Access", "Caller"]

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    tasks: frozenset[str]
    regions: frozenset[str]  # empty: anywhere
    limits: Limits
    via: str = ""  # key:<id>, cert:<name> or anonymous
    shared: bool = field(init=False)  # whether any of its limits lives in the shared store (the limiter is asked)

    def __post_init__(self) -> None:
        limits = self.limits
        object.__setattr__(self, "shared", bool(limits.rps or limits.items_per_s or limits.daily_quota))


UNIDENTIFIED = Caller("unidentified", frozenset(), frozenset(), Limits(), "none")  # refused with 401


@dataclass(frozen=True, slots=True)
class _Book:
    """Who is who under one registry epoch."""

    keys: dict[str, tuple[Caller, float]] = field(default_factory=dict)  # sha256 -> (caller, expires at, POSIX)
    certs: dict[str, Caller] = field(default_factory=dict)  # certificate name -> caller
    # The same few header values arrive on call after call: the entry of ``keys`` by the
    # header as sent makes such a call one lookup, without parsing or hashing. Only keys
    # found go in (a flood of made-up keys cannot grow it).
    sent: dict[str, tuple[Caller, float]] = field(default_factory=dict)


class Access:
    def __init__(self, settings: AccessSettings, region: str, watcher: RegistryWatcher,
                 file_clients: dict[str, Client]) -> None:
        self.region = region
        self._mtls = settings.client_ca is not None
        self._watcher = watcher
        self._file_clients = file_clients
        self.defaults = Limits(rps=settings.client_rps, burst=settings.client_burst,
                               items_per_s=settings.client_items_per_s, items_burst=settings.client_items_burst,
                               daily_quota=settings.client_daily_quota, max_concurrent=settings.client_max_concurrent)
        self.anonymous = (Caller(ANONYMOUS, frozenset(TASKS), frozenset(), self.defaults, ANONYMOUS)
                          if settings.allow_anonymous else None)
        self._book: _Book | None = None  # built on first use after each new registry epoch
        watcher.on_change(self._drop_book)

    def clients(self) -> dict[str, tuple[Client, str]]:
        """Every client by name with where it is defined (``file`` or ``registry``)."""
        out = {name: (client, "file") for name, client in self._file_clients.items()}
        out.update({name: (client, "registry") for name, client in self._watcher.snapshot.clients.items()})
        return out

    def _drop_book(self, record: object) -> None:
        self._book = None

    def _build_book(self) -> _Book:
        book = _Book()
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
        return book

    def identify(self, request: web.Request) -> Caller:
        """The caller, or Unauthorized."""
        headers = request.headers
        book = self._book or self._build_book()
        api_key = headers.get("X-API-Key")
        # "\n" keeps the two headers' values apart in the memo: no header value holds one
        sent = headers.get("Authorization") if api_key is None else "\n" + api_key
        if sent is None:
            return self._without_key(request, book)
        found = book.sent.get(sent)
        if found is None:
            found = book.keys.get(hash_key(_key(api_key, sent)))
            if found is not None and len(book.sent) < MEMO:
                book.sent[sent] = found
        if found is None or time.time() >= found[1]:
            raise Unauthorized("unknown, expired or revoked API key")
        return found[0]

    def _without_key(self, request: web.Request, book: _Book) -> Caller:
        names = _certificate_names(request) if self._mtls else []
        if names:
            for name in names:
                if name in book.certs:
                    return book.certs[name]
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


MEMO = 4096  # header values remembered per epoch


def _with_via(caller: Caller, via: str) -> Caller:
    return Caller(caller.name, caller.tasks, caller.regions, caller.limits, via)


def _key(api_key: str | None, authorization: str) -> str:
    """The key presented: X-API-Key's value, else Authorization's, which must be a Bearer."""
    if api_key is not None:
        return api_key.strip()
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("Authorization must be 'Bearer <API key>'")
    return key.strip()


def _certificate_names(request: web.Request) -> list[str]:
    """The CN, DNS names and URIs (a SPIFFE id, say) of a client certificate the TLS layer
    verified, if any."""
    transport = request.transport
    cert: dict[str, Any] | None = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return []
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names + [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "URI")]
