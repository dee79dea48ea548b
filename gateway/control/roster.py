"""Which gateways are alive, as a switch has to count them before it answers.

The store's gateway heartbeats alone undercount right after Redis comes back empty:
every gateway is missing until its next beat (up to a third of the TTL later), and a
switch that took that partial list for "every gateway" would answer before the missing
ones had applied it, so a client could still get the old version after the answer. The
roster remembers every gateway it has seen and counts it as alive until it has been
absent from the store's heartbeats for a whole TTL of successful reads; a store outage
stops that clock, so an outage longer than the TTL forgets no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from geogate.shared.errors import StoreUnavailable
from geogate.shared.heartbeats import GatewayHeartbeat, Heartbeats

__all__ = ["Roster"]


class Roster:
    def __init__(self, heartbeats: Heartbeats[GatewayHeartbeat], clock: Callable[[], float] = time.monotonic) -> None:
        self.heartbeats = heartbeats
        self._clock = clock
        self._seen: dict[str, GatewayHeartbeat] = {}  # key -> the last beat read
        self._missing_since: dict[str, float] = {}  # key -> first successful read it was absent from

    async def read(self) -> tuple[list[GatewayHeartbeat], list[GatewayHeartbeat]]:
        """(the heartbeats in the store now, gateways still alive by the roster whose
        heartbeat is missing from it); raises StoreUnavailable."""
        live = await self.heartbeats.live()
        now = self._clock()
        present = {beat.key for beat in live}
        for beat in live:
            self._seen[beat.key] = beat
            self._missing_since.pop(beat.key, None)
        missing = []
        for key in [k for k in self._seen if k not in present]:
            since = self._missing_since.setdefault(key, now)
            if now - since > self.heartbeats.ttl_s:
                del self._seen[key], self._missing_since[key]  # gone: stopped, or dead
            else:
                missing.append(self._seen[key])
        return live, missing

    async def keep_reading(self, interval_s: float) -> None:
        """Reads on a timer, so that the roster knows every gateway before the store loses them."""
        while True:
            with contextlib.suppress(StoreUnavailable):
                await self.read()
            await asyncio.sleep(interval_s)
