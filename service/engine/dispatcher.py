"""The dispatcher: plans due fires exactly once, sends them through a push backend, records the results.

One loop per process; any number of processes may share one database:
1. plan: lock due tasks with SKIP LOCKED, insert one run per fire (unique per task, instant and wave), advance
   the task, and lease the runs to send now to this process, all in one short transaction;
2. send: outside any transaction, at most `send_concurrency` at once; a run's id is its idempotency key;
3. record: outcomes are written in batches; failures are retried with backoff, and a run whose sender
   died is taken over by any replica when its lease runs out;
4. sleep until the earliest due instant; LISTEN/NOTIFY wakes every replica when a change makes it earlier.

Each recorded send is one structured log line (event "dispatch") and one sample of the runs-by-outcome
counter and the lateness histogram (service.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Callable
from typing import Any

from service import metrics
from service.domain import dispatch, errors, timing, types
from service.engine.backends import PushBackend
from service.store import database

log = logging.getLogger(__name__)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    wave_offsets: tuple[int, ...] = timing.REAL_UTC_OFFSETS_MINUTES
    misfire_grace: dt.timedelta = dt.timedelta(minutes=5)
    batch_size: int = 500
    send_concurrency: int = 200
    lease: dt.timedelta = dt.timedelta(seconds=60)
    retry: dispatch.RetryPolicy = dispatch.RetryPolicy()
    # The safety net: the longest sleep, should a notification ever be lost.
    max_idle_seconds: float = 5.0
    # SIGTERM: how long in-flight sends may take to finish before their runs are handed back.
    drain_seconds: float = 10.0
    sweep_interval: dt.timedelta = dt.timedelta(minutes=1)


class Engine:
    def __init__(self, store: database.Store, backend: PushBackend, config: EngineConfig) -> None:
        self._store = store
        self._backend = backend
        self._config = config
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake_at: float | None = None  # epoch seconds the loop sleeps until; None: any change wakes it
        self._slot_freed = asyncio.Event()
        self._unstarted: list[types.RunToSend] = []
        self._in_flight: dict[asyncio.Task[None], types.RunToSend] = {}
        self._results: list[types.RunResult] = []
        self._results_ready = asyncio.Event()
        self._listening = False
        self._last_sweep = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        self._rng = random.Random()

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._backend.start()
        self._listen_task = asyncio.create_task(self._listen_forever(), name="engine-listen")
        self._record_task = asyncio.create_task(self._record_forever(), name="engine-record")
        self._loop_task = asyncio.create_task(self._loop(), name="engine-loop")
        for task in (self._listen_task, self._record_task, self._loop_task):
            task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        """Stop claiming, let in-flight sends finish (up to drain_seconds), hand back the rest, flush."""
        self._stopping.set()
        self._wake.set()
        await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=self._config.drain_seconds)
        # Leased but never started (the loop stopped while waiting for a send slot), or still sending.
        unfinished = [run.run_id for run in self._unstarted] + [run.run_id for run in self._in_flight.values()]
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._results_ready.set()
        await asyncio.gather(self._record_task, return_exceptions=True)
        await self._flush_results()
        if unfinished:
            with contextlib.suppress(errors.ServiceError):
                await self._store.release_runs(unfinished, _utcnow())
            log.info("engine handed back %d unfinished sends", len(unfinished))
        self._listen_task.cancel()
        await asyncio.gather(self._listen_task, return_exceptions=True)
        await self._backend.close()

    # -- the loop ---------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                more = await self._tick()
            except errors.ServiceError as exc:
                log.warning("engine tick failed, retrying in 1 s: %s", exc.message)
                await self._sleep(1.0)
                continue
            except Exception:  # a bug must not stop dispatching for good: log it loudly and go on
                log.exception("engine tick failed unexpectedly, retrying in 1 s")
                await self._sleep(1.0)
                continue
            if not more:
                await self._sleep_until_due()

    async def _tick(self) -> bool:
        """One round of plan, send, and claim retries, a batch of each; True when more work may wait."""
        limit = self._config.batch_size
        now = _utcnow()
        lease_until = now + self._config.lease
        missed: list[int] = []
        planned, runs = await self._store.plan_due(now, limit, lease_until, self._plan(now, missed))
        metrics.record_missed(sum(missed))  # only once the plan is committed
        await self._dispatch_all(runs)
        retries: list[types.RunToSend] = []
        if not self._stopping.is_set():
            retries = await self._store.claim_retries(now, limit, lease_until)
            await self._dispatch_all(retries)
        if now - self._last_sweep >= self._config.sweep_interval:
            self._last_sweep = now
            await self._store.expire_lapsed(now)
        return planned >= limit or len(retries) >= limit

    def _plan(self, now: dt.datetime, missed: list[int]) -> Callable[[types.DueSchedule], dispatch.DuePlan]:
        def plan(schedule: types.DueSchedule) -> dispatch.DuePlan:
            try:
                planned = dispatch.plan_due(
                    schedule.trigger,
                    timing.load_zone(schedule.time_zone),
                    self._config.wave_offsets,
                    schedule.next_fire_at,
                    now,
                    self._config.misfire_grace,
                )
            except Exception:
                # One task whose trigger cannot be planned (a zone removed from tzdata, say) must not block
                # every other: it stops here, expired, and the log says why.
                log.exception("cannot plan schedule %s; it is expired without firing", schedule.schedule_id)
                return dispatch.DuePlan(send=(), missed=(), next_fire_at=None)
            missed.append(len(planned.missed))
            return planned

        return plan

    async def _sleep_until_due(self) -> None:
        # Clear first and accept any notification while we ask: a change landing in between still wakes us.
        self._wake.clear()
        self._wake_at = None
        if self._stopping.is_set():
            return
        try:
            next_due = await self._store.next_wake()
        except errors.ServiceError:
            next_due = None
        ceiling = self._config.max_idle_seconds if self._listening else min(0.5, self._config.max_idle_seconds)
        if next_due is None:
            timeout = ceiling
        else:
            timeout = min(ceiling, max(0.0, (next_due - _utcnow()).total_seconds()))
        self._wake_at = _utcnow().timestamp() + timeout
        await self._sleep(timeout)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _notified(self, payload: str) -> None:
        """A task now fires at `payload` (epoch seconds): wake up if that is before our planned wake-up."""
        try:
            fires_at = float(payload)
        except ValueError:
            fires_at = 0.0
        if self._wake_at is None or fires_at < self._wake_at:
            self._wake.set()

    async def _listen_forever(self) -> None:
        while not self._stopping.is_set():
            connection = None
            try:
                connection = await self._store.listen(self._notified)
                self._listening = True
                self._wake.set()  # changes may have been missed while we were not listening
                while not connection.is_closed() and not self._stopping.is_set():
                    await asyncio.sleep(1.0)
            except Exception as exc:  # any failure: the connection is gone, make a new one
                log.warning("engine LISTEN connection failed, retrying: %r", exc)
            finally:
                self._listening = False
                if connection is not None and not connection.is_closed():
                    await connection.close()
            await self._sleep(1.0)

    # -- sending ----------------------------------------------------------------------------------------

    async def _dispatch_all(self, runs: list[types.RunToSend]) -> None:
        """Start each run's send as a slot frees; if the engine stops meanwhile, the rest is handed back."""
        for index, run in enumerate(runs):
            while len(self._in_flight) >= self._config.send_concurrency:
                if self._stopping.is_set():
                    self._unstarted.extend(runs[index:])
                    return
                self._slot_freed.clear()
                await _wait_first(self._slot_freed, self._stopping)
            if self._stopping.is_set():
                self._unstarted.extend(runs[index:])
                return
            self._dispatch(run)

    def _dispatch(self, run: types.RunToSend) -> None:
        task = asyncio.create_task(self._send(run))
        self._in_flight[task] = run
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._slot_freed.set()

    async def _send(self, run: types.RunToSend) -> None:
        if not run.still_wanted:
            self._add_result(types.RunResult(run.run_id, "cancelled", _utcnow(), error="task deleted or disabled"))
            metrics.record_run("cancelled", None)
            return
        try:
            outcome, payload = await self._backend.send(run)
        except Exception as exc:  # a backend bug must not lose the run: retry it like a connection error
            log.exception("push backend raised for run %s", run.run_id)
            outcome, payload = dispatch.SendOutcome("retry", error=f"backend error: {exc!r}"[:1000]), None
        now = _utcnow()
        result = self._result_for(run, outcome, payload, now)
        # Lateness: when this attempt finished, measured from the instant the run was due.
        lateness = (now - run.due_at).total_seconds()
        reported = "retry" if result.state == "pending" else result.state
        metrics.record_run(reported, lateness)
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
        self._add_result(result)

    def _result_for(
        self, run: types.RunToSend, outcome: dispatch.SendOutcome, payload: dict[str, Any] | None, now: dt.datetime
    ) -> types.RunResult:
        if outcome.kind == "sent":
            return types.RunResult(run.run_id, "sent", now, msg_id=outcome.msg_id, payload=payload)
        if outcome.kind == "retry":
            next_attempt = self._config.retry.next_attempt(run.attempts, outcome, now, self._rng)
            if next_attempt is not None:
                return types.RunResult(run.run_id, "pending", now, error=outcome.error, next_attempt_at=next_attempt)
            error = f"gave up after {run.attempts} attempts: {outcome.error}"
            return types.RunResult(run.run_id, "failed", now, error=error)
        return types.RunResult(run.run_id, "failed", now, error=outcome.error)

    # -- recording --------------------------------------------------------------------------------------

    def _add_result(self, result: types.RunResult) -> None:
        self._results.append(result)
        self._results_ready.set()

    async def _record_forever(self) -> None:
        while not self._stopping.is_set():
            await self._results_ready.wait()
            self._results_ready.clear()
            await self._flush_results()

    async def _flush_results(self) -> None:
        while self._results:
            batch, self._results = self._results, []
            try:
                await self._store.record_results(batch)
            except errors.ServiceError as exc:
                # Kept in memory and tried again; should the process die first, the leases run out and the
                # runs are resent with the same idempotency key.
                log.warning("recording %d results failed, retrying: %s", len(batch), exc.message)
                self._results = batch + self._results
                if self._stopping.is_set():
                    return
                await asyncio.sleep(0.5)
                continue
            if any(result.state == "pending" for result in batch):
                self._wake.set()  # a retry may now be the earliest work


async def _wait_first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("engine task %s crashed", task.get_name(), exc_info=task.exception())


