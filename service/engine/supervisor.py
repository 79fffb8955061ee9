"""Keeps the engine's loops running: a loop that raises is logged and started again with backoff, and while
any loop is down the engine reports a problem, which fails /readyz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


class Supervisor:
    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()
        self.restarts: dict[str, int] = {}

    @property
    def down(self) -> frozenset[str]:
        """The loops that crashed and wait to be started again."""
        return frozenset(self._down)

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop()` until the engine stops; a loop returns once it sees the stop."""
        self._tasks[name] = asyncio.create_task(self._keep_running(name, loop), name=f"engine-{name}")

    async def _keep_running(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            started = asyncio.get_running_loop().time()
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if asyncio.get_running_loop().time() - started > 60:
                    backoff = BACKOFF_FIRST_SECONDS  # it had run well for a while: a fresh fault
                self._down.add(name)
                self.restarts[name] = self.restarts.get(name, 0) + 1
                log.exception(
                    "engine loop %s crashed; restarting it in %.1f s", name, backoff,
                    extra={"event": "engine_loop_crashed", "loop": name},
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                self._down.discard(name)

    async def stop(self, names: list[str], timeout: float) -> None:
        """Wait up to `timeout` for the named loops to notice the stop, then cancel what still runs."""
        tasks = [self._tasks[name] for name in names if name in self._tasks]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
