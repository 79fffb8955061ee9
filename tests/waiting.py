"""Waiting for a condition instead of sleeping for a fixed time and hoping."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(
    probe: Callable[[], Any],
    what: str,
    *,
    until: Callable[[Any], Any] = bool,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> Any:
    """Call `probe` (sync or async) until `until(value)` holds, and return that value; fail naming `what`
    and the last value seen once `timeout` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"waited {timeout} s for: {what}; last seen: {value!r}")
        await asyncio.sleep(interval)
