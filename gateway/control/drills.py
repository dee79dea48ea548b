"""Failover drills: take a region out on purpose, measure what its clients saw, put it back.

``fail`` marks the region failed in the registry (every gateway then routes its clients
to the next region of their failover order), ``drain`` drains it, ``kill`` SIGKILLs its
nodes (only where this gateway runs on the nodes' host, as under ``geogate up``, whose
launcher restarts them). After ``duration_s`` the region is restored (``kill``: the
nodes come back by themselves) and the drill watches until its clients are served at
home again.

The report is built from the calls *this gateway* answered for clients of that region:
time to reroute (state change applied -> first answer from another region), calls
failed, where they were served, p50/p99 before, during and after, and time to recover
(restore -> first answer from home again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec

from geogate.gateway.ops.stats import StatsBook
from geogate.shared.errors import InvalidRequest

__all__ = ["Drill", "DrillReport", "Drills"]

log = logging.getLogger("geogate.gateway.drills")

MAX_EVENTS = 200_000
AFTER_S = 10.0  # how long after the restore a drill keeps measuring, at most


class Phase(msgspec.Struct):
    requests: int = 0
    failed: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    served_by: dict[str, int] = {}


class DrillReport(msgspec.Struct):
    id: str
    region: str
    mode: str
    duration_s: float
    who: str
    reason: str
    state: str = "running"  # running, recovering, done, failed
    started_at: str = ""
    elapsed_s: float = 0.0
    gateway: str = ""  # whose calls were measured
    reroute_ms: float | None = None
    recover_ms: float | None = None
    before: Phase = msgspec.field(default_factory=Phase)
    during: Phase = msgspec.field(default_factory=Phase)
    after: Phase = msgspec.field(default_factory=Phase)
    killed_pids: list[int] = []
    error: str = ""


def _phase(events: list[tuple[float, str, bool, float]]) -> Phase:
    if not events:
        return Phase()
    latencies = sorted(ms for _, _, _, ms in events)
    served: dict[str, int] = {}
    for _, region, ok, _ in events:
        if ok:
            served[region] = served.get(region, 0) + 1
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)
    return Phase(len(events), sum(1 for e in events if not e[2]), pick(0.50), pick(0.99), served)


class Drill:
    """One running drill; ``Drills.observe_call`` feeds it every call of the region's clients."""

    def __init__(self, report: DrillReport) -> None:
        self.report = report
        self.events: list[tuple[float, str, bool, float]] = []  # (monotonic arrival, served region, ok, ms)
        self.started = time.monotonic()
        self.applied_at = 0.0  # when the state change took effect here
        self.restored_at = 0.0

    def observe(self, served: str, ok: bool, ms: float) -> None:
        now = time.monotonic()
        if len(self.events) < MAX_EVENTS:  # by arrival: a call in flight when the region failed belongs before
            self.events.append((now - ms / 1000, served, ok, ms))
        r = self.report
        if ok and served != r.region and self.applied_at and r.reroute_ms is None:
            r.reroute_ms = round((now - self.applied_at) * 1000, 1)
        if ok and served == r.region and self.restored_at and r.recover_ms is None:
            r.recover_ms = round((now - self.restored_at) * 1000, 1)

    def summarize(self) -> None:
        start, restored = self.applied_at, self.restored_at or float("inf")
        self.report.during = _phase([e for e in self.events if start <= e[0] < restored])
        self.report.after = _phase([e for e in self.events if e[0] >= restored])


class Drills:
    def __init__(self, stats: StatsBook, gateway: str, *, can_kill: bool,
                 set_state: Callable[[str, str, str, str], Awaitable[None]],
                 node_pids: Callable[[str], Awaitable[list[int]]]) -> None:
        self.stats = stats
        self.gateway = gateway
        self.can_kill = can_kill
        self._set_state = set_state  # (region, state, who, why), waits until applied here
        self._node_pids = node_pids
        self.active: Drill | None = None
        self.done: dict[str, DrillReport] = {}
        self._task: asyncio.Task[None] | None = None

    def observe_call(self, home: str, served: str, ok: bool, ms: float) -> None:
        """One scoring call this gateway answered (the data plane's call observer)."""
        drill = self.active
        if drill is not None and drill.report.region == home:
            drill.observe(served, ok, ms)

    def get(self, drill_id: str) -> DrillReport | None:
        if self.active is not None and self.active.report.id == drill_id:
            self.active.report.elapsed_s = round(time.monotonic() - self.active.started, 2)
            return self.active.report
        return self.done.get(drill_id)

    def start(self, region: str, duration_s: float, mode: str, who: str, reason: str) -> Drill:
        if self.active is not None:
            raise InvalidRequest(f"drill {self.active.report.id} on {self.active.report.region} is still running")
        if mode == "kill" and not self.can_kill:
            raise InvalidRequest("kill drills need a gateway that can stop nodes on its own host (drill_kill, set by "
                                 "geogate up); use mode fail or drain")
        report = DrillReport(uuid.uuid4().hex[:12], region, mode, duration_s, who, reason, gateway=self.gateway,
                             started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        before = self.stats(f"home:{region}").snapshot(int(min(59, max(1, duration_s))))
        report.before = Phase(before.count, before.errors, before.p50_ms, before.p99_ms)
        drill = self.active = Drill(report)
        self._task = asyncio.create_task(self._run(drill), name=f"drill-{report.id}")
        return drill

    async def wait(self, drill: Drill) -> DrillReport:
        if self._task is not None:
            await asyncio.shield(self._task)
        return drill.report

    async def _run(self, drill: Drill) -> None:
        r = drill.report
        started = drill.started
        try:
            if r.mode == "kill":
                r.killed_pids = await self._kill(r.region)
            else:
                await self._set_state(r.region, "failed" if r.mode == "fail" else "drained", f"drill:{r.who}",
                                      f"drill {r.id}: {r.reason}")
            drill.applied_at = time.monotonic() if r.mode != "kill" else started
            await asyncio.sleep(r.duration_s)
            if r.mode != "kill":
                await self._set_state(r.region, "active", f"drill:{r.who}", f"drill {r.id} over: restore")
            drill.restored_at = time.monotonic()
            r.state = "recovering"
            deadline = drill.restored_at + AFTER_S
            while time.monotonic() < deadline and r.recover_ms is None:
                await asyncio.sleep(0.1)
            r.state = "done"
        except Exception as exc:  # the drill must end and restore, whatever failed
            log.exception("drill %s failed", r.id)
            r.state, r.error = "failed", f"{type(exc).__name__}: {exc}"
            if r.mode != "kill":
                try:
                    await self._set_state(r.region, "active", f"drill:{r.who}", f"drill {r.id} failed: restore")
                except Exception:
                    log.exception("drill %s could not restore %s", r.id, r.region)
        finally:
            r.elapsed_s = round(time.monotonic() - started, 2)
            drill.summarize()
            self.done[r.id] = r
            self.active = None

    async def _kill(self, region: str) -> list[int]:
        pids = await self._node_pids(region)
        if not pids:
            raise InvalidRequest(f"no node of {region} with a known pid on this host")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.warning("drill: SIGKILLed the nodes of %s: %s", region, pids)
        return pids
