"""The version registry: which color every region serves, at which version, and since when.

One record (``RegistryRecord``) holds the active color, each color's model version and
weights checksum, the canary share, each region's state and a monotonically increasing
``epoch``. Every change is a compare-and-set on the epoch (``Store.compare_and_set``): of
two concurrent writers one wins and the other gets ``Conflict``. The same atomic step
publishes the new record on the change channel and appends an audit entry (who, when,
why, before, after) to a capped stream.

``RegistryWatcher`` keeps a process-local snapshot for the hot path: it applies records
from the channel, never going back in epoch (stale and duplicate messages are ignored),
polls as a safety net, keeps serving the last snapshot while the store is unreachable
(fail static), and lets callers await "epoch >= N".

A store that comes back empty (Redis restarted without persistence) is healed by the
first reader that knows a newer record: it writes that record back with its epoch
(``Registry.read``), so epochs never go backwards and no state is lost while any
gateway still holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

import msgspec

from geogate.shared.clients import Client, check_client
from geogate.shared.errors import Conflict, InvalidRequest, StoreUnavailable
from geogate.shared.lifecycle import cancel
from geogate.shared.store import Store

__all__ = [
    "AuditEntry",
    "ColorInfo",
    "RegionState",
    "Registry",
    "RegistryRecord",
    "RegistryWatcher",
]

log = logging.getLogger("geogate.registry")

RegionState = Literal["active", "drained", "failed"]
REGION_STATES: tuple[str, ...] = ("active", "drained", "failed")


class ColorInfo(msgspec.Struct, frozen=True):
    model_version: str
    sha256: str = ""


class RegistryRecord(msgspec.Struct, frozen=True, kw_only=True):
    epoch: int = 0
    active_color: str = "blue"
    colors: dict[str, ColorInfo] = {}
    canary_percent: float = 0.0
    regions: dict[str, RegionState] = {}
    clients: dict[str, Client] = {}  # calling services managed through the admin API (shared/clients.py)
    updated_at: str = ""  # ISO 8601, UTC
    updated_by: str = ""
    reason: str = ""

    @property
    def preview_color(self) -> str | None:
        """The color that is registered but not active (canary traffic goes there)."""
        others = sorted(c for c in self.colors if c != self.active_color)
        return others[0] if others else None

    def region_state(self, region: str) -> RegionState:
        return self.regions.get(region, "active")

    def active_version(self) -> str | None:
        info = self.colors.get(self.active_color)
        return info.model_version if info else None


class AuditEntry(msgspec.Struct, frozen=True):
    id: str
    epoch: int
    action: str
    who: str
    when: str
    why: str
    before: RegistryRecord | None
    after: RegistryRecord


_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(RegistryRecord).decode
_decode_optional = msgspec.json.Decoder(RegistryRecord | None).decode

Mutation = Callable[[RegistryRecord], RegistryRecord]


class Registry:
    """Reads and CAS-writes the registry record in a ``Store``."""

    def __init__(self, store: Store, namespace: str = "geogate", audit_maxlen: int = 10_000) -> None:
        self.store = store
        # One hash tag, so the record, its counter and the audit stream share a Redis Cluster slot.
        self.key = f"{namespace}:{{registry}}:record"
        self.audit_stream = f"{namespace}:{{registry}}:audit"
        self.channel = f"{namespace}:registry:changes"
        self._audit_maxlen = audit_maxlen
        self._newest: RegistryRecord | None = None  # the newest record this process has seen

    def saw(self, record: RegistryRecord) -> None:
        """Remember ``record`` if it is the newest seen (so an emptied store can be healed)."""
        if self._newest is None or record.epoch > self._newest.epoch:
            self._newest = record

    async def read(self) -> RegistryRecord:
        """The store's record (epoch 0 and defaults before the first write).

        If the store holds an older epoch than this process has seen, the store lost its
        data (a restart without persistence): write the newer record back first.
        """
        raw = await self.store.get(self.key)
        record = _decode_record(raw) if raw else RegistryRecord()
        newest = self._newest
        if newest is not None and newest.epoch > record.epoch:
            try:
                await self.store.compare_and_set(
                    self.key, await self.store.counter(self.key), _encode(newest),
                    channel=self.channel, new_counter=newest.epoch,
                )
                log.warning("registry store was behind (epoch %d < %d); restored it", record.epoch, newest.epoch)
            except Conflict:
                return await self.read()  # someone else wrote meanwhile: take theirs, or heal again
            return newest
        self.saw(record)
        return record

    async def change(
        self,
        mutate: Mutation,
        *,
        who: str,
        why: str,
        action: str,
        expected_epoch: int | None = None,
    ) -> RegistryRecord:
        """Apply ``mutate`` to the current record and write it as the next epoch.

        With ``expected_epoch`` (what the operator saw), a record that moved on since
        raises ``Conflict`` rather than applying the change to a state nobody looked at.
        Without it, a concurrent writer also yields ``Conflict``: the caller retries
        knowingly. Raises ``StoreUnavailable`` when the store is unreachable.
        """
        if not who or not why:
            raise InvalidRequest("a registry change needs who makes it and why")
        before = await self.read()
        if expected_epoch is not None and expected_epoch != before.epoch:
            raise Conflict(f"the registry is at epoch {before.epoch}, not {expected_epoch}", current=before.epoch)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        after = msgspec.structs.replace(mutate(before), epoch=before.epoch + 1, updated_at=now, updated_by=who,
                                        reason=why)
        _validate(after)
        audit = {
            "epoch": str(after.epoch).encode(),
            "action": action.encode(),
            "who": who.encode(),
            "when": now.encode(),
            "why": why.encode(),
            "before": _encode(before if before.epoch else None),
            "after": _encode(after),
        }
        await self.store.compare_and_set(
            self.key, before.epoch, _encode(after), channel=self.channel,
            audit_stream=self.audit_stream, audit=audit, audit_maxlen=self._audit_maxlen, new_counter=after.epoch,
        )
        self.saw(after)
        return after

    async def audit(self, count: int = 50) -> list[AuditEntry]:
        """The newest audit entries, newest first."""
        entries = await self.store.xrevrange(self.audit_stream, count)
        return [
            AuditEntry(
                id=e.id,
                epoch=int(e.fields["epoch"]),
                action=e.fields["action"].decode(),
                who=e.fields["who"].decode(),
                when=e.fields["when"].decode(),
                why=e.fields["why"].decode(),
                before=_decode_optional(e.fields["before"]),
                after=_decode_record(e.fields["after"]),
            )
            for e in entries
        ]

    # -- the changes operators make ----------------------------------------------------

    async def initialize(self, colors: Mapping[str, ColorInfo], active: str, regions: list[str], *, who: str,
                         why: str = "initial registry") -> RegistryRecord:
        """Create the record if the store has none; an existing record is left alone."""
        current = await self.read()
        if current.epoch:
            return current
        try:
            return await self.change(
                lambda r: msgspec.structs.replace(r, colors=dict(colors), active_color=active,
                                                  regions=dict.fromkeys(regions, "active")),
                who=who, why=why, action="initialize", expected_epoch=0,
            )
        except Conflict:
            return await self.read()  # another process initialized it first

    async def register_color(self, color: str, model_version: str, sha256: str, *, who: str, why: str,
                             expected_epoch: int | None = None) -> RegistryRecord:
        info = ColorInfo(model_version=model_version, sha256=sha256)
        return await self.change(lambda r: msgspec.structs.replace(r, colors={**r.colors, color: info}),
                                 who=who, why=why, action="register_color", expected_epoch=expected_epoch)

    async def switch(self, to: str, *, who: str, why: str, expected_epoch: int | None = None,
                     action: str = "switch") -> RegistryRecord:
        def mutate(r: RegistryRecord) -> RegistryRecord:
            if to not in r.colors:
                raise InvalidRequest(f"color {to!r} is not registered (registered: {sorted(r.colors)})")
            return msgspec.structs.replace(r, active_color=to, canary_percent=0.0)

        return await self.change(mutate, who=who, why=why, action=action, expected_epoch=expected_epoch)

    async def set_canary(self, percent: float, *, who: str, why: str,
                         expected_epoch: int | None = None) -> RegistryRecord:
        if not 0.0 <= percent <= 100.0:
            raise InvalidRequest(f"canary percent must be within 0..100, not {percent}")
        return await self.change(lambda r: msgspec.structs.replace(r, canary_percent=float(percent)),
                                 who=who, why=why, action="canary", expected_epoch=expected_epoch)

    async def set_region_state(self, region: str, state: str, *, who: str, why: str,
                               expected_epoch: int | None = None) -> RegistryRecord:
        if state not in REGION_STATES:
            raise InvalidRequest(f"region state must be one of {REGION_STATES}, not {state!r}")
        return await self.change(lambda r: msgspec.structs.replace(r, regions={**r.regions, region: state}),
                                 who=who, why=why, action=f"region_{state}", expected_epoch=expected_epoch)

    async def change_client(self, name: str, mutate: Callable[[Client | None], Client], *, who: str, why: str,
                            action: str, expected_epoch: int | None = None) -> RegistryRecord:
        """Write ``mutate(the client named name, or None)`` as that client."""
        def apply(r: RegistryRecord) -> RegistryRecord:
            client = check_client(mutate(r.clients.get(name)))
            return msgspec.structs.replace(r, clients={**r.clients, client.name: client})

        return await self.change(apply, who=who, why=why, action=action, expected_epoch=expected_epoch)


def _validate(record: RegistryRecord) -> None:
    if record.colors and record.active_color not in record.colors:
        raise InvalidRequest(f"active color {record.active_color!r} is not registered")
    if not 0.0 <= record.canary_percent <= 100.0:
        raise InvalidRequest("canary percent must be within 0..100")


class RegistryWatcher:
    """A process-local snapshot of the registry, kept fresh from the change channel and a
    periodic poll; it keeps the last snapshot while the store is unreachable."""

    def __init__(self, registry: Registry, *, poll_interval_s: float = 2.0, max_backoff_s: float = 5.0) -> None:
        self.registry = registry
        self._poll_interval = poll_interval_s
        self._max_backoff = max_backoff_s
        self._snapshot: RegistryRecord | None = None
        self._changed = asyncio.Condition()
        self._listeners: list[Callable[[RegistryRecord], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.last_refresh = 0.0  # monotonic time of the last successful read or message
        self.connected = False

    @property
    def snapshot(self) -> RegistryRecord:
        """The newest record seen (defaults, epoch 0, before any)."""
        return self._snapshot or RegistryRecord()

    @property
    def age_s(self) -> float:
        """Seconds since the store last confirmed the snapshot (inf before the first)."""
        return time.monotonic() - self.last_refresh if self.last_refresh else float("inf")

    def on_change(self, listener: Callable[[RegistryRecord], None]) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """Read once (if the store answers), then follow the channel and poll."""
        with contextlib.suppress(StoreUnavailable):
            await self.refresh()
        self._tasks = [
            asyncio.create_task(self._listen(), name="registry-listen"),
            asyncio.create_task(self._poll(), name="registry-poll"),
        ]

    async def close(self) -> None:
        await cancel(*self._tasks)
        self._tasks = []

    async def refresh(self) -> RegistryRecord:
        record = await self.registry.read()
        self.last_refresh = time.monotonic()
        await self.apply(record)
        return self.snapshot

    async def apply(self, record: RegistryRecord) -> bool:
        """Take ``record`` if it is newer than the snapshot; False for stale or duplicate."""
        self.registry.saw(record)
        if self._snapshot is not None and record.epoch <= self._snapshot.epoch:
            return False
        self._snapshot = record
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                log.exception("registry listener failed")
        async with self._changed:
            self._changed.notify_all()
        return True

    async def wait_for_epoch(self, epoch: int, timeout_s: float | None = None) -> RegistryRecord:
        """Return once the snapshot's epoch is at least ``epoch``."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.snapshot.epoch >= epoch)
        return self.snapshot

    async def _listen(self) -> None:
        backoff = 0.0
        while True:
            try:
                async with self.registry.store.subscribe(self.registry.channel) as messages:
                    self.connected = True
                    backoff = 0.0
                    # Anything published while we were not subscribed is read now.
                    await self.refresh()
                    async for raw in messages:
                        try:
                            record = _decode_record(raw)
                        except msgspec.DecodeError:
                            log.warning("ignoring an undecodable registry message")
                            continue
                        self.last_refresh = time.monotonic()
                        await self.apply(record)
            except StoreUnavailable as exc:
                self.connected = False
                backoff = min(self._max_backoff, max(0.05, backoff * 2))
                log.info("registry channel unavailable (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff * (0.5 + random.random() / 2))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                await self.refresh()
            except StoreUnavailable as exc:
                log.info("registry poll failed, serving snapshot epoch %d: %s", self.snapshot.epoch, exc)
