"""The recorder: writes send outcomes back to their runs in batches, and never drops a batch it took.

Recording a batch also keeps each task's last run and count of consecutive failures, and disables a task that
reached its max_failures (sql/0008 record_run_results): each such task is logged here, once, and counted.

A batch that cannot be written stays in memory and is tried again with backoff, whatever the failure. Should
one result itself be unwritable (a bug: every text from outside is made storable before it gets here), the
batch is written one result at a time, after UNEXPECTED_TRIES failures, so the rest lands, and that one is
left to its lease: it runs out, and the run is resent with the same idempotency key, within MAX_ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from service import metrics
from service.domain import errors, types
from service.engine.ports import RunQueue
from service.engine.waker import wait_any

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0
# Unexpected failures of one batch (not the database being away) before it is written one result at a time.
UNEXPECTED_TRIES = 3


class Recorder:
    def __init__(self, queue: RunQueue, on_recorded: Callable[[list[types.RunResult]], None]) -> None:
        self._queue = queue
        self._on_recorded = on_recorded
        self._results: list[types.RunResult] = []
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._results)

    def add(self, result: types.RunResult) -> None:
        self._results.append(result)
        self._ready.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Write results as they come, until the engine stops (stop() then flushes what is left)."""
        while not stopping.is_set():
            await wait_any(self._ready, stopping)
            self._ready.clear()
            await self.flush(stopping=stopping)

    async def flush(self, *, stopping: asyncio.Event | None = None, deadline: float | None = None) -> bool:
        """Write every result held; True once none is left. Retries until done, the engine stops (the
        final flush in stop() takes over) or `deadline` (loop time) passes."""
        loop = asyncio.get_running_loop()
        pause = RETRY_FIRST_SECONDS
        unexpected = 0
        while self._results:
            batch, self._results = self._results, []
            try:
                await self._write(batch, deadline, one_by_one=unexpected >= UNEXPECTED_TRIES)
            except asyncio.CancelledError:
                self._results = batch + self._results
                raise
            except Exception as exc:  # noqa: BLE001 - whatever the failure, the batch is kept (module docstring)
                # Kept, in order, ahead of what arrived meanwhile.
                self._results = batch + self._results
                reason = exc.message if isinstance(exc, errors.ServiceError) else repr(exc)
                if not isinstance(exc, errors.ServiceError | TimeoutError):
                    unexpected += 1
                log.warning("recording %d results failed, retrying: %s", len(batch), reason)
                if (stopping is not None and stopping.is_set()) or (deadline is not None and loop.time() >= deadline):
                    return False
                with contextlib.suppress(TimeoutError):
                    if stopping is not None:
                        await asyncio.wait_for(stopping.wait(), timeout=pause)
                    else:
                        await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_SECONDS)
                continue
            pause, unexpected = RETRY_FIRST_SECONDS, 0
            self._on_recorded(batch)
        return True

    async def _write(self, batch: list[types.RunResult], deadline: float | None, *, one_by_one: bool) -> None:
        if not one_by_one:
            await self._record(batch, deadline)
            return
        for result in batch:  # find the one that cannot be written; the others land
            try:
                await self._record([result], deadline)
            except (errors.ServiceError, TimeoutError):
                raise  # the database is away: the whole batch waits for it (written ones are fenced)
            except Exception:
                log.exception("result of run %s cannot be recorded; its lease will run out and it is resent",
                              result.run_id)

    async def _record(self, batch: list[types.RunResult], deadline: float | None) -> None:
        timeout = None if deadline is None else max(0.05, deadline - asyncio.get_running_loop().time())
        disabled = await asyncio.wait_for(self._queue.record_results(batch), timeout)
        if disabled:
            log_disabled_by_failures(disabled)


def log_disabled_by_failures(disabled: list[types.DisabledByFailures]) -> None:
    """One line per task the engine disabled for reaching its max_failures, and the metric."""
    metrics.record_disabled_by_failures(len(disabled))
    for task in disabled:
        log.warning(
            "schedule %s disabled after %d consecutive failed runs (max_failures %d)",
            task.schedule_id,
            task.consecutive_failures,
            task.max_failures,
            extra={
                "event": "schedule_disabled_by_failures",
                "schedule_id": str(task.schedule_id),
                "app_key": task.app_key,
                "consecutive_failures": task.consecutive_failures,
                "max_failures": task.max_failures,
                "error": task.error,
            },
        )
