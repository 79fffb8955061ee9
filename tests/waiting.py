"""Waiting in tests: for a condition to become true, never for a fixed time.

A fixed sleep is either too short on a loaded machine (the test flakes) or too long on an idle one (the
suite crawls). `eventually` polls the condition itself and returns as soon as it holds. The only fixed waits
left in the tests prove that something does NOT happen within a window; each says so where it stands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    predicate: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `predicate` (an async callable) until it returns something truthy, and return that.

    Fails with an AssertionError naming `what` (or the predicate) and its last value once `timeout`
    seconds have passed; the predicate is always asked at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            name = what or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"not true within {timeout:g} s: {name} (last value: {value!r})")
        await asyncio.sleep(min(interval, remaining))
