"""The waker: when the engine's loops look at the database again.

A LISTEN connection hears every create or update that makes a fire earlier than the planner's wake-up, and
every run a caller triggers (payload RUNS_QUEUED: the claimer takes those, as retries due now). It is
kept by service.store.listening: checked with a heartbeat query, so a half-open socket (a database that vanished
without closing it) is found within a heartbeat and the connection is made again; changes missed meanwhile are
caught by waking at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from service.engine.clock import Clock
from service.engine.ports import Listener, RunQueue
from service.store.listening import keep_listening

log = logging.getLogger(__name__)

# The payload of a triggered run's notification (sql/0010 trigger_run); any other payload is a fire's instant.
RUNS_QUEUED = "runs"


class Waker:
    def __init__(
        self, queue: RunQueue, clock: Clock, *, plan_ahead: dt.timedelta, max_idle_seconds: float,
        heartbeat_seconds: float = 5.0, connect_timeout: float = 5.0,
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._plan_ahead = plan_ahead.total_seconds()
        self._max_idle = max_idle_seconds
        self._heartbeat = heartbeat_seconds
        self._connect_timeout = connect_timeout
        self.wake = asyncio.Event()
        self.listening = False
        self.connections_made = 0  # LISTEN connections opened so far (one, unless some failed)
        self._wake_at: float | None = None  # database epoch seconds the planner sleeps until; None: awake
        self.on_runs_queued: Callable[[], None] = lambda: None  # the claimer's wake-up (service.engine.dispatcher)

    def poke(self) -> None:
        self.wake.set()

    def notified(self, payload: str) -> None:
        """A task now fires at `payload` (epoch seconds): wake the planner if that is before its wake-up. Runs
        were queued (RUNS_QUEUED): wake the claimer."""
        if payload == RUNS_QUEUED:
            self.on_runs_queued()
            return
        try:
            fires_at = float(payload)
        except ValueError:
            fires_at = 0.0
        if self._wake_at is None or fires_at - self._plan_ahead < self._wake_at:
            self.wake.set()

    async def sleep_until(self, wake_at: dt.datetime | None, stopping: asyncio.Event) -> None:
        """Sleep until `wake_at` (the database's clock), a notification or the safety net, whichever first.

        The caller clears `wake` before asking the database when to wake, so a change landing in between
        still wakes it."""
        ceiling = self._max_idle if self.listening else min(0.5, self._max_idle)
        timeout = ceiling if wake_at is None else min(ceiling, max(0.0, self._clock.seconds_until(wake_at)))
        self._wake_at = self._clock.now() + timeout
        try:
            await wait_any(self.wake, stopping, timeout=timeout)
        finally:
            self._wake_at = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep a LISTEN connection open, heartbeat it, and make it again whenever it fails (a second later)."""
        await keep_listening(
            lambda: self._queue.listen(self.notified, self._connect_timeout),
            self._beat,
            lambda connection: connection.close(),
            stopping,
            heartbeat_seconds=self._heartbeat,
            on_connected=self._connected,
            on_lost=lambda exc, _pause: log.warning("engine LISTEN connection failed, reconnecting: %r", exc),
            on_closed=self._closed,
        )

    def _connected(self) -> None:
        self.connections_made += 1
        self.listening = True
        self.wake.set()  # changes may have been missed while we were not listening
        self.on_runs_queued()

    def _closed(self) -> None:
        self.listening = False

    async def _beat(self, connection: Listener) -> None:
        """The heartbeat also measures the database's clock: it reads it as it answers."""
        sent = self._clock.local()
        now = await connection.heartbeat(self._heartbeat)
        self._clock.observe(sent, now, self._clock.local())


async def wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Return when any of `events` is set, or after `timeout` seconds."""
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
