"""The sender: at most `capacity` pushes in flight, and no more runs leased than can be sent within a lease.

Whoever leases runs (the fire loop, the claim of retries) first reserves places, leases no more runs than it
got, hands each leased run to `send` and gives back the places it did not use. There are 2 x `capacity`
places: `capacity` slots in flight, and a queue of at most `capacity` runs behind them. That bound is what
keeps a lease from running out in the queue: every send in flight ends within the send timeout, so a queued
run waits at most one send timeout for its slot, and the lease is at least three send timeouts (service.app).

Why a queue at all, and not only free slots: a lease costs a claim's round trip (20 ms under a burst's load),
and a slot that waits for the claim of its run sends nothing meanwhile. Leasing only free slots took a 10k
burst from 1.8 s to 3.3-4.7 s; the queue keeps the slots busy while the next claim is under way.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import random
import uuid
from collections.abc import Callable

from service import metrics
from service.domain import dispatch, timing, types
from service.engine.backends import PushBackend
from service.engine.clock import Clock

log = logging.getLogger(__name__)


class Sender:
    def __init__(
        self,
        backend: PushBackend,
        capacity: int,
        retry: dispatch.RetryPolicy,
        on_result: Callable[[types.RunResult], None],
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._backend = backend
        self._capacity = capacity
        self._retry = retry
        self._on_result = on_result
        self._reserved = 0
        self._in_flight: dict[asyncio.Task[None], types.RunToSend] = {}
        self._queued: collections.deque[types.RunToSend] = collections.deque()
        self._slot_freed = asyncio.Event()
        self._rng = random.Random()

    @property
    def free(self) -> int:
        """Places a new lease may take: slots in flight and places in the queue, less those held."""
        return 2 * self._capacity - self._reserved - len(self._in_flight) - len(self._queued)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def reserve(self, wanted: int, stopping: asyncio.Event) -> int:
        """Wait until enough places are free (or the engine stops: 0), then reserve up to `wanted` of them.

        Enough is `wanted`, or a quarter of the slots if that is fewer, so that claims are not spent one run at
        a time as single slots free."""
        enough = max(1, min(wanted, self._capacity // 4))
        while self.free < enough:
            if stopping.is_set():
                return 0
            self._slot_freed.clear()
            waiters = [asyncio.ensure_future(self._slot_freed.wait()), asyncio.ensure_future(stopping.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        if stopping.is_set():
            return 0
        granted = min(wanted, self.free)
        self._reserved += granted
        return granted

    def try_reserve(self, wanted: int) -> int:
        """Reserve up to `wanted` places without waiting: as many as are free now, perhaps none."""
        granted = max(0, min(wanted, self.free))
        self._reserved += granted
        return granted

    def unreserve(self, count: int) -> None:
        self._reserved -= count
        if count:
            self._slot_freed.set()

    def send(self, run: types.RunToSend) -> None:
        """Send a leased run on the place reserved for it: at once if a slot is free, else next in the queue."""
        self._reserved -= 1
        if len(self._in_flight) < self._capacity:
            self._start(run)
        else:
            self._queued.append(run)

    def _start(self, run: types.RunToSend) -> None:
        task = asyncio.create_task(self._send(run))
        self._in_flight[task] = run
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if self._queued and len(self._in_flight) < self._capacity:
            self._start(self._queued.popleft())
        self._slot_freed.set()

    async def _send(self, run: types.RunToSend) -> None:
        if not run.still_wanted:
            self._on_result(dispatch.cancelled(run, self._now()))
            metrics.record_run("cancelled", None)
            return
        try:
            outcome, payload = await self._backend.send(run)
        except Exception as exc:  # a backend bug must not lose the run: retry it like a connection error
            log.exception("push backend raised for run %s", run.run_id)
            outcome, payload = dispatch.SendOutcome("retry", error=f"backend error: {exc!r}"), None
        now = self._now()
        result = dispatch.result_for(run, outcome, payload, now, self._retry, self._rng)
        # Lateness: when this attempt finished, measured from the instant the run was due.
        lateness = (now - run.due_at).total_seconds()
        reported = "retry" if result.state == "pending" else result.state
        metrics.record_run(reported, lateness)
        if log.isEnabledFor(logging.INFO):  # the line's fields cost a burst's CPU even when not logged
            _log_dispatch(run, result, reported, lateness)
        self._on_result(result)

    def _now(self) -> dt.datetime:
        """By the database's clock: outcomes, next attempts and lateness compare with its instants."""
        return dt.datetime.fromtimestamp(self._clock.now(), dt.timezone.utc)

    async def drain(self, timeout: float) -> list[tuple[uuid.UUID, int]]:
        """Let the sends in flight finish for up to `timeout` seconds; cancel the rest and return them, and the
        runs still queued, (run id, attempt) for handing back."""
        queued = [(run.run_id, run.attempts) for run in self._queued]
        self._queued.clear()  # none starts from here on
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=max(0.0, timeout))
        unfinished = [(run.run_id, run.attempts) for run in self._in_flight.values()]
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return queued + unfinished


def _log_dispatch(run: types.RunToSend, result: types.RunResult, reported: str, lateness: float) -> None:
    wave = None if run.utc_offset_minutes is None else timing.format_offset(run.utc_offset_minutes)
    log.info(
        "dispatch schedule %s run %s: %s (attempt %d, %.1f ms late)",
        run.schedule_id,
        run.run_id,
        reported,
        run.attempts,
        lateness * 1000,
        extra={
            "event": "dispatch",
            "schedule_id": str(run.schedule_id),
            "run_id": str(run.run_id),
            "wave": wave,
            "due_at": run.due_at.isoformat(),
            "lateness_ms": round(lateness * 1000, 1),
            "outcome": reported,
            "attempt": run.attempts,
            "msg_id": result.msg_id,
            "error": result.error,
        },
    )


def log_settled(settled: list[types.SettledRun]) -> None:
    """Runs the engine settled without sending (missed, or failed with their lease run out): one line each,
    so the tenant's outcome is visible beyond the metrics, and the metric."""
    for run in settled:
        metrics.record_run(run.state, None)
        log.warning(
            "dispatch schedule %s run %s: %s",
            run.schedule_id,
            run.run_id,
            run.error,
            extra={
                "event": "dispatch",
                "schedule_id": str(run.schedule_id),
                "run_id": str(run.run_id),
                "due_at": run.due_at.isoformat(),
                "outcome": run.state,
                "error": run.error,
            },
        )



