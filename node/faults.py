"""Fault injection for tests and failover drills: delays, holds and failures, configured
through ``fault_*`` settings and off by default. A hold waits for a file to appear, and a
failure lasts while its file exists, so a test decides exactly when, without racing a
timer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Faults"]

_POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class Faults:
    delay_ms: float = 0.0
    hold_load_file: str | None = None
    hold_inference_file: str | None = None
    fail_file: str | None = None
    slow_file: str | None = None  # with delay_ms: the delay applies only while this file exists

    @property
    def active(self) -> bool:
        return bool(self.delay_ms or self.hold_load_file or self.hold_inference_file or self.fail_file)

    def failing(self) -> bool:
        """Scoring calls answer 500 while this is true (health probes still pass)."""
        return self.fail_file is not None and Path(self.fail_file).exists()

    def before_load(self) -> None:
        _wait_for(self.hold_load_file)

    def before_inference(self) -> None:
        """Runs on the device thread before every forward pass."""
        _wait_for(self.hold_inference_file)
        if self.delay_ms and (self.slow_file is None or Path(self.slow_file).exists()):
            time.sleep(self.delay_ms / 1000)


def _wait_for(path: str | None) -> None:
    if path is None:
        return
    target = Path(path)
    while not target.exists():
        time.sleep(_POLL_S)
