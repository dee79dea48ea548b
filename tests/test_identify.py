"""Access.identify in-process: the per-epoch memo of presented header values never
outlives what it remembers. (tests/test_access.py runs keys through real gateways.)

Requests are aiohttp's own Request objects (``make_mocked_request``: no socket needed to
read headers); the registry is a real RegistryWatcher over the in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from geogate.gateway.access.callers import Access
from geogate.gateway.config import AccessSettings
from geogate.shared.clients import Client, new_key
from geogate.shared.errors import Unauthorized
from geogate.shared.registry import Registry, RegistryRecord, RegistryWatcher
from geogate.shared.store import MemoryStore


def _request(headers: dict[str, str]) -> web.Request:
    return make_mocked_request("POST", "/v1/similarity", headers=headers)


async def _world(client: Client) -> tuple[Access, RegistryWatcher]:
    watcher = RegistryWatcher(Registry(MemoryStore()))
    await watcher.apply(RegistryRecord(epoch=1, clients={client.name: client}))
    return Access(AccessSettings(), "local", watcher, {}), watcher


async def test_a_remembered_key_is_refused_once_a_new_epoch_revokes_it() -> None:
    plaintext, key = new_key()
    client = Client("orders", keys=(key,))
    access, watcher = await _world(client)
    bearer = {"Authorization": f"Bearer {plaintext}"}
    assert access.identify(_request(bearer)).name == "orders"
    assert access.identify(_request(bearer)).via == f"key:{key.id}"  # the second from the memo

    revoked = msgspec.structs.replace(client, keys=(msgspec.structs.replace(key, revoked=True),))
    await watcher.apply(RegistryRecord(epoch=2, clients={"orders": revoked}))
    with pytest.raises(Unauthorized):
        access.identify(_request(bearer))


async def test_the_memo_keeps_the_two_headers_apart() -> None:
    plaintext, key = new_key()
    access, _ = await _world(Client("orders", keys=(key,)))
    assert access.identify(_request({"X-API-Key": plaintext})).name == "orders"
    with pytest.raises(Unauthorized, match="Bearer"):  # the same value without a scheme is no Bearer
        access.identify(_request({"Authorization": plaintext}))
    assert access.identify(_request({"Authorization": f"Bearer {plaintext}"})).name == "orders"
    with pytest.raises(Unauthorized):  # ... and a Bearer header's whole value is no key
        access.identify(_request({"X-API-Key": f"Bearer {plaintext}"}))


async def test_a_remembered_key_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    plaintext, key = new_key()
    ends = datetime.now(UTC) + timedelta(hours=1)
    access, _ = await _world(Client("orders", keys=(msgspec.structs.replace(key, expires_at=ends.isoformat()),)))
    bearer = {"Authorization": f"Bearer {plaintext}"}
    assert access.identify(_request(bearer)).name == "orders"
    later = ends.timestamp() + 1
    monkeypatch.setattr("geogate.gateway.access.callers.time.time", lambda: later)  # an hour on, without waiting for it
    with pytest.raises(Unauthorized):
        access.identify(_request(bearer))


async def test_unknown_keys_are_not_remembered() -> None:
    _, key = new_key()
    access, _ = await _world(Client("orders", keys=(key,)))
    for n in range(50):
        with pytest.raises(Unauthorized):
            access.identify(_request({"Authorization": f"Bearer made-up-{n}"}))
    book = access._book
    assert book is not None and not book.sent
