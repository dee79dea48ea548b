"""``/admin/v1/clients``: the calling services, their API keys and limits (admin role).

Every change is a registry epoch (compare-and-set, audited with who and why), answered
once every live gateway has applied it, like a switch. A new key's plaintext is in the
answer that created it and nowhere else; the registry keeps its SHA-256. Rotating a key
gives the client a new one and lets the old ones live ``overlap_s`` more (0: revoked at
once). Clients from the gateway's ``clients_file`` are listed but read-only here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import msgspec
from aiohttp import web

from geogate.gateway.control.admin import Admin, Reason, ReasonBody, _body, _changed, _ctx, _json
from geogate.gateway.control.auth import Principal
from geogate.gateway.control.openapi import Route
from geogate.shared.clients import TASKS, Client, Limits, new_key
from geogate.shared.errors import Conflict, NotFound
from geogate.shared.http import Handler
from geogate.shared.registry import RegistryRecord

__all__ = ["ROUTES"]


class NewClientBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    reason: Reason
    tasks: tuple[str, ...] = TASKS
    regions: tuple[str, ...] = ()
    limits: Limits = Limits()
    cert_names: tuple[str, ...] = ()
    key: bool = True  # issue an API key now (a certificate-only client needs none)


class ClientChangeBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason
    tasks: tuple[str, ...] | None = None
    regions: tuple[str, ...] | None = None
    limits: Limits | None = None
    cert_names: tuple[str, ...] | None = None
    disabled: bool | None = None


class RotateBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason
    overlap_s: Annotated[float, msgspec.Meta(ge=0, le=90 * 86_400)] = 86_400.0


def _view(client: Client, source: str, now: datetime) -> dict[str, Any]:
    keys = [{"id": k.id, "created_at": k.created_at, "expires_at": k.expires_at or None, "revoked": k.revoked,
             "valid": k.valid(now)} for k in client.keys]
    return {"name": client.name, "source": source, "tasks": client.tasks, "regions": client.regions,
            "limits": client.limits, "cert_names": client.cert_names, "disabled": client.disabled, "keys": keys}


B = TypeVar("B")


async def _managed(request: web.Request, body_type: type[B]) -> tuple[tuple[Admin, Principal], str, Client, B]:
    """An admin's change to the client the path names, one the registry holds: who asks,
    the name, the client as it is now, and the request's body."""
    ctx = _ctx(request, "admin")
    name = request.match_info["name"]
    found = ctx[0].view.clients().get(name)
    if found is None:
        raise NotFound(f"no client {name[:64]!r}")
    client, source = found
    if source != "registry":
        raise Conflict(f"client {name!r} is defined in the gateway's clients_file; change it there")
    return ctx, name, client, await _body(request, body_type)


async def _write(ctx: tuple[Admin, Principal], name: str, mutate: Any, why: str, action: str,
                 **extra: Any) -> web.Response:
    admin, who = ctx
    record: RegistryRecord = await admin.view.registry.change_client(name, mutate, who=who.name, why=why,
                                                                      action=action)
    applied = await _changed(admin, record)
    return _json({"client": _view(record.clients[name], "registry", datetime.now(UTC)), **extra, **applied})


async def list_clients(request: web.Request) -> web.Response:
    admin, _ = _ctx(request, "admin")
    now = datetime.now(UTC)
    clients = sorted(admin.view.clients().items())
    return _json({"anonymous": admin.view.anonymous, "default_limits": admin.view.default_limits,
                  "clients": [_view(client, source, now) for _, (client, source) in clients]})


async def create_client(request: web.Request) -> web.Response:
    ctx = _ctx(request, "admin")
    body: NewClientBody = await _body(request, NewClientBody)
    if body.name in ctx[0].view.clients():
        raise Conflict(f"client {body.name[:64]!r} exists; rotate its key or change it instead")
    key, stored = new_key() if body.key else (None, None)

    def create(existing: Client | None) -> Client:
        if existing is not None:  # created by someone else meanwhile
            raise Conflict(f"client {body.name!r} exists")
        return Client(body.name, body.tasks, body.regions, body.limits, (stored,) if stored else (), body.cert_names)

    return await _write(ctx, body.name, create, body.reason, "client_create", api_key=key)


async def change_client(request: web.Request) -> web.Response:
    ctx, name, _, body = await _managed(request, ClientChangeBody)
    changes = {f: getattr(body, f) for f in ("tasks", "regions", "limits", "cert_names", "disabled")
               if getattr(body, f) is not None}
    return await _write(ctx, name, lambda c: msgspec.structs.replace(_exists(c, name), **changes), body.reason,
                        "client_change")


async def rotate_key(request: web.Request) -> web.Response:
    ctx, name, _, body = await _managed(request, RotateBody)
    now = datetime.now(UTC)
    key, stored = new_key(now)
    until = (now + timedelta(seconds=body.overlap_s)).isoformat(timespec="seconds")

    def rotate(client: Client | None) -> Client:
        client = _exists(client, name)
        old = tuple(k if not k.valid(now) or (k.expires_at and k.expires_at < until) else
                    msgspec.structs.replace(k, expires_at=until, revoked=body.overlap_s == 0) for k in client.keys)
        return msgspec.structs.replace(client, keys=(*old, stored))

    return await _write(ctx, name, rotate, body.reason, "client_rotate_key", api_key=key,
                        old_keys_valid_until=until if body.overlap_s else None)


async def revoke_key(request: web.Request) -> web.Response:
    ctx, name, client, body = await _managed(request, ReasonBody)
    key_id = request.match_info["id"]
    if not any(k.id == key_id for k in client.keys):
        raise NotFound(f"client {name!r} has no key {key_id[:16]!r}")

    def revoke(c: Client | None) -> Client:
        c = _exists(c, name)
        return msgspec.structs.replace(c, keys=tuple(msgspec.structs.replace(k, revoked=True) if k.id == key_id else k
                                                     for k in c.keys))

    return await _write(ctx, name, revoke, body.reason, "client_revoke_key")


async def revoke_client(request: web.Request) -> web.Response:
    ctx, name, _, body = await _managed(request, ReasonBody)
    return await _write(ctx, name, lambda c: msgspec.structs.replace(_exists(c, name), disabled=True),
                        body.reason, "client_revoke")


def _exists(client: Client | None, name: str) -> Client:
    if client is None:
        raise NotFound(f"no client {name[:64]!r}")
    return client


APPLIED = "the client as it is now, with gateways_applied and gateways_not_confirmed"
ROUTES: list[tuple[Route, Handler]] = [
    (Route("GET", "/admin/v1/clients", "admin", "Calling services, their keys (never the keys themselves) and "
           "limits", returns="anonymous, default_limits, clients"), list_clients),
    (Route("POST", "/admin/v1/clients", "admin", "Add a calling service; the answer holds its first API key, "
           "shown once", NewClientBody, returns=APPLIED + ", api_key"), create_client),
    (Route("POST", "/admin/v1/clients/{name}", "admin", "Change a client's tasks, regions, limits, certificate "
           "names or disabled state", ClientChangeBody, returns=APPLIED), change_client),
    (Route("POST", "/admin/v1/clients/{name}/keys", "admin", "Rotate: a new API key (shown once); the old ones "
           "stay valid overlap_s more", RotateBody, returns=APPLIED + ", api_key, old_keys_valid_until"),
     rotate_key),
    (Route("POST", "/admin/v1/clients/{name}/keys/{id}/revoke", "admin", "Revoke one API key", ReasonBody,
           returns=APPLIED), revoke_key),
    (Route("POST", "/admin/v1/clients/{name}/revoke", "admin", "Revoke a client: every call of it is refused",
           ReasonBody, returns=APPLIED), revoke_client),
]
