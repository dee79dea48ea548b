"""The one shape every geogate process lives in: startup -> main loop -> shutdown
(uvicorn's ``Server``), on an ``AsyncExitStack``.

Start-up runs named steps in order; each step that starts something registers how to
stop it on the stack the moment it has started. Shutdown is the stack unwinding: whatever
started is stopped in reverse order, whether the main loop ended normally, a signal
arrived, or a start-up step failed half way (then the steps before it are undone and the
error goes on to the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Service", "Step", "cancel"]

Step = Callable[[contextlib.AsyncExitStack], Awaitable[None]]

log = logging.getLogger("geogate.lifecycle")


class Service:
    """A process's life. Subclasses name their start-up ``steps`` and may override
    ``main_loop``; ``serve`` runs it all."""

    def __init__(self) -> None:
        self.should_exit = asyncio.Event()  # set by SIGTERM/SIGINT, or by whoever runs this in-process

    def steps(self) -> list[tuple[str, Step]]:
        """(name, step) in start-up order."""
        raise NotImplementedError

    async def startup(self, stack: contextlib.AsyncExitStack) -> None:
        for name, step in self.steps():
            log.debug("starting: %s", name)
            await step(stack)

    async def main_loop(self) -> int:
        await self.should_exit.wait()
        return 0

    async def serve(self, *, handle_signals: bool = True) -> int:
        """Start, run until told to stop, stop; the main loop's exit code."""
        async with contextlib.AsyncExitStack() as stack:
            if handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.should_exit.set)
                    stack.callback(loop.remove_signal_handler, sig)
            await self.startup(stack)
            return await self.main_loop()


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until each has ended, whatever it ended with. A cancel
    that a library swallowed (redis-py's ``asyncio.wait_for`` on Python 3.11) is sent
    again until it lands, so a background loop cannot outlive its owner."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: an error of a loop being stopped is not news


RECANCEL_S = 0.5
