"""What the launcher shows while it works: a live table of its processes on a terminal
(redrawn in place), one line per change otherwise (logs, CI, a detached run's caller)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import msgspec

__all__ = ["LiveTable", "Row", "Status"]


class Row(msgspec.Struct):
    name: str
    kind: str  # store, node, gateway
    region: str = ""
    color: str = ""
    url: str = ""
    pid: int | None = None
    state: str = "new"  # new, starting, loading, warming, ready, unready, restarting, exited, stopped
    detail: str = ""  # model version when ready, the exit code when it exited, ...
    restarts: int = 0
    since: float = msgspec.field(default_factory=time.time)  # when the state last changed (epoch s)


class Status(msgspec.Struct):
    """``RUN_DIR/status.json``: what a detached launcher tells the command that started it."""

    phase: str = "starting"  # starting, ready, failed, stopping, stopped
    message: str = ""
    pid: int = 0
    rows: list[Row] = []
    summary: str = ""


def _age(row: Row, now: float) -> str:
    return "" if row.state in ("ready", "stopped") else f" {now - row.since:.0f}s"


class LiveTable:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.redraw = self.stream.isatty()
        self._drawn = 0
        self._said: dict[str, tuple[str, str]] = {}

    def show(self, rows: list[Row], *, table: bool = True) -> None:
        """``table``: redraw the whole table (while starting); else print changes only."""
        now = time.time()
        if self.redraw and table:
            lines = [f"{'PROCESS':22s} {'REGION':13s} {'COLOR':6s} {'PID':>7s}  STATE"]
            lines += [f"{r.name:22s} {r.region:13s} {r.color:6s} {r.pid or '-':>7}  {r.state}{_age(r, now)}"
                      f"{'  ' + r.detail if r.detail else ''}" for r in rows]
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.stream.write(up + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            for r in rows:
                said = (r.state, r.detail)
                if self._said.get(r.name) != said:
                    detail = f" ({r.detail})" if r.detail else ""
                    self.stream.write(f"{time.strftime('%H:%M:%S')} {r.name}: {r.state}{detail}\n")
            self._drawn = 0
        self._said = {r.name: (r.state, r.detail) for r in rows}
        self.stream.flush()

    def say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = 0
