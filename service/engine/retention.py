"""The retention sweep: purges what RETENTION_DAYS no longer keeps, in short transactions dispatch never waits on.

Every sweep interval it purges batch after batch, first the tasks deleted or expired longer than the retention
ago, with their runs (sql/0007 purge_ended_schedules), then the apps deleted that long ago whose tasks are all
gone (queries.sql purge_deleted_apps), then the runs in a final state (sent, failed, missed,
skipped, cancelled) created and ended longer ago than that (queries.sql purge_old_runs), and the triggered runs
left without pushes (purge_old_triggers). Each batch is one
transaction of at most `batch_size` runs (2,000: 6-7 ms median, 20 ms p99; bench/README.md "Retention"); it
takes tasks with SKIP LOCKED and only runs no engine statement writes, so neither the planner nor the senders
wait on it (an update of an expired task, answered 28100, may wait for one batch).
Dispatch comes first: between batches the sweep rests twice as long as the batch took (it holds a connection at
most a third of the time), and longer while the engine is busy sending or holds runs planned ahead (a burst),
up to BUSY_YIELD_SECONDS per batch, so a steady load slows the purge without starving it. It stops between two
batches as soon as the engine stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import statistics
from collections.abc import Callable

from service import metrics
from service.domain import errors
from service.engine.ports import RunQueue
from service.engine.waker import wait_any

log = logging.getLogger(__name__)

# The shortest rest between two batches, whatever the batch took; and the rest per second of a batch.
MIN_PAUSE_SECONDS = 0.02
REST_PER_BATCH_SECOND = 2.0
# While the engine is busy, the longest it waits before the next batch, and how often it looks again.
BUSY_YIELD_SECONDS = 2.0
BUSY_POLL_SECONDS = 0.1
# Tasks per batch of the task purge: most ended tasks have one run (26 for a zone_type 2 task), so the batch's
# runs bound it first; a task's runs are all purged before the task is.
TASKS_PER_BATCH_DIVISOR = 10


@dataclasses.dataclass
class SweepReport:
    """What one sweep purged, and what it cost."""

    schedules: int = 0
    runs: int = 0
    apps: int = 0
    batches: int = 0
    seconds: float = 0.0
    batch_seconds: list[float] = dataclasses.field(default_factory=list)

    @property
    def longest_batch_seconds(self) -> float:
        return max(self.batch_seconds, default=0.0)


class Retention:
    def __init__(
        self,
        queue: RunQueue,
        *,
        retention: dt.timedelta,
        batch_size: int,
        interval: dt.timedelta,
        min_pause_seconds: float = MIN_PAUSE_SECONDS,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._queue = queue
        self._retention = retention
        self._batch_size = batch_size
        self._tasks_per_batch = max(1, batch_size // TASKS_PER_BATCH_DIVISOR)
        self._interval = interval.total_seconds()
        self._min_pause = min_pause_seconds
        self._busy = busy

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.sweep(stopping)
            except errors.ServiceError as exc:
                log.warning("retention sweep failed, trying again at the next one: %s", exc.message)
            await wait_any(stopping, timeout=self._interval)

    async def sweep(self, stopping: asyncio.Event | None = None) -> SweepReport:
        """Purge until nothing is left to purge (or the engine stops); log and count what went."""
        stopping = stopping or asyncio.Event()
        loop = asyncio.get_running_loop()
        report = SweepReport()
        started = loop.time()
        await self._yield(stopping)
        while not stopping.is_set():
            batch_started = loop.time()
            schedules, runs = await self._queue.purge_ended_schedules(
                self._retention, self._tasks_per_batch, self._batch_size
            )
            self._add(report, loop.time() - batch_started, schedules, runs)
            if not schedules and not runs:
                break
            await self._rest(stopping, loop.time() - batch_started)
        if not stopping.is_set():
            # Once their tasks are gone: the rows of apps deleted longer ago than the retention (few; one statement).
            report.apps = await self._queue.purge_deleted_apps(self._retention)
        while not stopping.is_set():
            batch_started = loop.time()
            runs = await self._queue.purge_old_runs(self._retention, self._batch_size)
            self._add(report, loop.time() - batch_started, 0, runs)
            if runs < self._batch_size:
                break
            await self._rest(stopping, loop.time() - batch_started)
        while not stopping.is_set():
            # Then the triggered runs whose pushes are all gone (issue 13; few: one row per run now or webhook call).
            if await self._queue.purge_old_triggers(self._retention, self._batch_size) < self._batch_size:
                break
        report.seconds = loop.time() - started
        if report.schedules or report.runs or report.apps:
            log.info(
                "retention purged %d tasks, %d runs and %d deleted apps older than %s, in %d transactions over %.1f s "
                "(longest %.1f ms)",
                report.schedules, report.runs, report.apps, self._retention, report.batches, report.seconds,
                report.longest_batch_seconds * 1000,
                extra={
                    "event": "retention_purge", "schedules": report.schedules, "runs": report.runs, "apps": report.apps,
                    "batches": report.batches, "seconds": round(report.seconds, 3),
                    "longest_batch_ms": round(report.longest_batch_seconds * 1000, 1),
                    "median_batch_ms": round(statistics.median(report.batch_seconds) * 1000, 1),
                    "p99_batch_ms": round(_p99(report.batch_seconds) * 1000, 1),
                },
            )
        return report

    @staticmethod
    def _add(report: SweepReport, seconds: float, schedules: int, runs: int) -> None:
        report.batches += 1
        report.schedules += schedules
        report.runs += runs
        report.batch_seconds.append(seconds)
        metrics.record_purged(schedules, runs)

    async def _rest(self, stopping: asyncio.Event, batch_seconds: float) -> None:
        """Dispatch first: rest twice as long as the batch took, and more while the engine is busy."""
        await wait_any(stopping, timeout=max(self._min_pause, batch_seconds * REST_PER_BATCH_SECOND))
        await self._yield(stopping)

    async def _yield(self, stopping: asyncio.Event) -> None:
        """Wait while the engine is busy, for BUSY_YIELD_SECONDS at most."""
        waited = 0.0
        while self._busy() and waited < BUSY_YIELD_SECONDS and not stopping.is_set():
            await wait_any(stopping, timeout=BUSY_POLL_SECONDS)
            waited += BUSY_POLL_SECONDS


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
