"""Running a service's main coroutine: on uvloop where it is installed, else asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # only the import: an ImportError from the service itself must surface
        return asyncio.run(main)
    return uvloop.run(main)
