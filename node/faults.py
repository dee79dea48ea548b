"""Fault injection for tests and failover drills: delays and holds, configured through
``fault_*`` settings and off by default. A hold waits for a file to appear, so a test
decides exactly when the node may go on, without racing a timer."""

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

    @property
    def active(self) -> bool:
        return bool(self.delay_ms or self.hold_load_file or self.hold_inference_file)

    def before_load(self) -> None:
        _wait_for(self.hold_load_file)

    def before_inference(self) -> None:
        """Runs on the device thread before every forward pass."""
        _wait_for(self.hold_inference_file)
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000)


def _wait_for(path: str | None) -> None:
    if path is None:
        return
    target = Path(path)
    while not target.exists():
        time.sleep(_POLL_S)
