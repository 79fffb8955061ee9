"""Keeping a LISTEN connection alive: the one loop both listeners run (the engine's waker, for schedule changes;
service.store.notices, for app changes).

A notification sent while no connection listens is lost, so each (re)connection is announced and the caller
assumes it missed something. A heartbeat finds a half-open socket (a database that vanished without closing
the connection) within one beat; any failure closes the connection and a new one is made after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

C = TypeVar("C")


async def keep_listening(
    connect: Callable[[], Awaitable[C]],
    beat: Callable[[C], Awaitable[object]],
    close: Callable[[C], Awaitable[None]],
    stopping: asyncio.Event,
    *,
    heartbeat_seconds: float,
    on_connected: Callable[[], None],
    on_lost: Callable[[Exception, float], None],
    on_closed: Callable[[], None] = lambda: None,
    retry_seconds: float = 1.0,
    max_retry_seconds: float = 1.0,
) -> None:
    """Connect, announce it, heartbeat every `heartbeat_seconds` until `stopping` is set or anything fails, then
    close (`on_closed` either way). After a failure: `on_lost(exc, pause)`, a pause, and again; the pause
    doubles from `retry_seconds` up to `max_retry_seconds` while the failures last."""
    pause = retry_seconds
    while not stopping.is_set():
        connection = None
        try:
            connection = await connect()
            pause = retry_seconds
            on_connected()
            while not stopping.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=heartbeat_seconds)
                if not stopping.is_set():
                    await beat(connection)
        except Exception as exc:  # noqa: BLE001 - any failure: the connection is gone, make a new one
            if not stopping.is_set():
                on_lost(exc, pause)
        finally:
            on_closed()
            if connection is not None:
                with contextlib.suppress(Exception):
                    await close(connection)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=pause)
        pause = min(pause * 2, max_retry_seconds)
