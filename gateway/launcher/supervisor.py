"""Child processes of the launcher: started, restarted with backoff when they crash,
stopped in order.

Each child runs in a session of its own, so a Ctrl-C at the terminal reaches only the
launcher, which then stops gateways first (they drain), then nodes, then the store. Each
child also asks the kernel for SIGTERM when the launcher dies (PR_SET_PDEATHSIG), so a
launcher killed with SIGKILL leaves no orphans behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "Supervisor", "backoff_s"]

log = logging.getLogger("geogate.launcher")

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
STABLE_AFTER_S = 30.0  # a child that ran this long starts its backoff from scratch


def backoff_s(failures: int) -> float:
    """0.5 s after the first crash, doubling, at most 30 s (like systemd's restart delay
    with a cap), so a crash loop neither spins nor waits long once fixed."""
    return float(min(30.0, 0.5 * 2 ** max(0, failures - 1)))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(eq=False)
class Child:
    name: str
    kind: str  # "store", "node" or "gateway": the stop order and the table's grouping
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    restart: bool = True
    proc: asyncio.subprocess.Process | None = None
    state: str = "new"  # new, running, restarting, exited, stopped
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    _failures: int = field(default=0, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None


class Supervisor:
    STOP_ORDER = ("gateway", "node", "store")

    def __init__(self, on_change: Callable[[Child], None] = lambda child: None) -> None:
        self.children: list[Child] = []
        self.stopping = False
        self._on_change = on_change
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self, child: Child) -> Child:
        self.children.append(child)
        await self._spawn(child)
        self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch-{child.name}"))
        return child

    async def _spawn(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with child.log_path.open("ab") as out:  # the child keeps its own descriptor
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=child.env, start_new_session=True, preexec_fn=_die_with_parent,
            )
        child.started_at = time.monotonic()
        child.state = "running"
        self._on_change(child)

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            child.last_exit = code
            if self.stopping:
                child.state = "stopped"
                self._on_change(child)
                return
            if not child.restart:
                child.state = "exited"
                self._on_change(child)
                log.error("%s exited with %s", child.name, code)
                return
            ran = time.monotonic() - child.started_at
            child._failures = 1 if ran > STABLE_AFTER_S else child._failures + 1
            delay = backoff_s(child._failures)
            child.state = "restarting"
            self._on_change(child)
            log.warning("%s exited with %s after %.1f s; restarting in %.1f s", child.name, code, ran, delay)
            await asyncio.sleep(delay)
            if self.stopping:
                child.state = "stopped"
                self._on_change(child)
                return
            child.restarts += 1
            await self._spawn(child)

    async def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM by kind in ``STOP_ORDER``, each kind given ``timeout_s`` to exit, then
        SIGKILL. Gateways go first so that nothing is sent to nodes that are stopping."""
        self.stopping = True
        for kind in self.STOP_ORDER:
            group = [c for c in self.children if c.kind == kind and c.pid is not None]
            for child in group:
                _signal(child, signal.SIGTERM)
            for child in group:
                assert child.proc is not None
                try:
                    await asyncio.wait_for(child.proc.wait(), timeout_s)
                except TimeoutError:
                    log.warning("%s did not stop in %.0f s: killing it", child.name, timeout_s)
                    _signal(child, signal.SIGKILL)
                    await child.proc.wait()
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for child in self.children:
            if child.state not in ("stopped", "exited"):
                child.state = "stopped"
                self._on_change(child)


def _signal(child: Child, sig: int) -> None:
    if child.proc is not None and child.proc.returncode is None:
        try:
            child.proc.send_signal(sig)
        except ProcessLookupError:
            pass
