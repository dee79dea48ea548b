"""After a switch: watch the new color against the old one, and roll back on a breach.

The baseline is the old color's last minute of calls through this gateway, taken at the
moment of the switch. For ``watch_window_s`` the new color's calls since the switch are
compared with it once a second; once ``watch_min_calls`` have been seen, an error rate
more than ``watch_max_error_rate`` above the baseline's, or a p99 more than
``watch_p99_factor`` times the baseline's (and above 50 ms, so a fast baseline's noise is
not a breach), rolls back to the old color, audited as ``rollback`` by
``auto-rollback``. A later change to the registry by anyone ends the watch.

What is compared is this gateway's own traffic (the one that switched); other gateways'
calls are not pooled in.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from geogate.gateway.config import AdminSettings
from geogate.gateway.ops.stats import Snapshot, StatsBook
from geogate.shared.errors import Conflict, StoreUnavailable
from geogate.shared.registry import RegistryWatcher

__all__ = ["SwitchWatch", "WatchState"]

log = logging.getLogger("geogate.gateway.watch")

P99_FLOOR_MS = 50.0


class WatchState(msgspec.Struct):
    old: str
    new: str
    epoch: int  # the switch's epoch
    started_at: float  # epoch seconds
    window_s: float
    baseline: Snapshot
    state: str = "watching"  # watching, passed, rolled_back, superseded, failed
    current: Snapshot | None = None
    reason: str = ""
    rollback_epoch: int | None = None


class SwitchWatch:
    def __init__(self, watcher: RegistryWatcher, stats: StatsBook, settings: AdminSettings) -> None:
        self.watcher = watcher
        self.stats = stats
        self.settings = settings
        self.last: WatchState | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, old: str, new: str, epoch: int, baseline: Snapshot) -> WatchState | None:
        self.stop()
        if self.settings.watch_window_s <= 0:
            return None
        self.last = WatchState(old, new, epoch, time.time(), self.settings.watch_window_s, baseline)
        self._task = asyncio.create_task(self._run(self.last), name="switch-watch")
        return self.last

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            if self.last is not None and self.last.state == "watching":
                self.last.state = "superseded"

    def breach(self, current: Snapshot, baseline: Snapshot) -> str:
        cfg = self.settings
        if current.count < cfg.watch_min_calls:
            return ""
        if current.error_rate > baseline.error_rate + cfg.watch_max_error_rate:
            return (f"error rate {current.error_rate:.1%} over {current.count} calls vs {baseline.error_rate:.1%} "
                    f"before the switch (allowed +{cfg.watch_max_error_rate:.1%})")
        if baseline.count and current.p99_ms > max(P99_FLOOR_MS, cfg.watch_p99_factor * baseline.p99_ms):
            return (f"p99 {current.p99_ms:.0f} ms vs {baseline.p99_ms:.0f} ms before the switch "
                    f"(allowed x{cfg.watch_p99_factor:g})")
        return ""

    async def _run(self, state: WatchState) -> None:
        started = time.monotonic()
        series = self.stats(f"color:{state.new}")
        while True:
            await asyncio.sleep(1.0)
            if self.watcher.snapshot.epoch != state.epoch:
                state.state, state.reason = "superseded", f"the registry moved on to epoch {self.watcher.snapshot.epoch}"
                return
            elapsed = time.monotonic() - started
            # the calls since the switch: whole seconds, plus the current one
            state.current = series.snapshot(int(elapsed) + 1, until=time.monotonic() + 1)
            reason = self.breach(state.current, state.baseline)
            if reason:
                await self._roll_back(state, reason)
                return
            if elapsed >= state.window_s:
                state.state = "passed"
                log.info("switch to %s passed its %.0f s watch window", state.new, state.window_s)
                return

    async def _roll_back(self, state: WatchState, reason: str) -> None:
        log.error("switch to %s breached its watch window: %s; rolling back to %s", state.new, reason, state.old)
        try:
            record = await self.watcher.registry.switch(
                state.old, who="auto-rollback", why=f"watch window after the switch to {state.new}: {reason}",
                expected_epoch=state.epoch, action="rollback")
        except (Conflict, StoreUnavailable) as exc:
            state.state, state.reason = "failed", f"{reason}; the rollback failed: {exc}"
            return
        await self.watcher.apply(record)
        state.state, state.reason, state.rollback_epoch = "rolled_back", reason, record.epoch
