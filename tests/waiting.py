"""Waiting in tests: for a condition to become true, never for a fixed time.

A fixed sleep is either too short on a loaded machine (the test flakes) or too long on an idle one (the
suite crawls). `eventually` polls the condition itself and returns as soon as it holds. The only fixed waits
left in the tests prove that something does NOT happen within a window; each says so where it stands.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    probe: Callable[[], Any],
    what: str = "",
    *,
    until: Callable[[Any], Any] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> Any:
    """Call `probe` (sync or async) until `until(value)` holds (by default: the value is truthy), and return
    that value.

    Fails with an AssertionError naming `what` (or the probe) and its last value once `timeout` seconds have
    passed; the probe is always asked at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            name = what or getattr(probe, "__qualname__", repr(probe))
            raise AssertionError(f"not true within {timeout:g} s: {name} (last value: {value!r})")
        await asyncio.sleep(min(interval, remaining))
