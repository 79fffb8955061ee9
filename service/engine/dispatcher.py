"""The dispatcher: plans due fires exactly once, sends them through a push backend, records the results.

One loop per process; any number of processes may share one database:
1. plan: lock the tasks due within `plan_ahead` with SKIP LOCKED, insert one run per fire (unique per task,
   instant and wave), advance the task, all in one short transaction. Runs due now are leased to this
   process for sending at once; runs due later are 'planned' (reserved to this process) and held in memory;
2. fire: just before a planned run is due, claim it in one statement (a change to its task may have dropped
   it meanwhile) and hand it to the sender at its instant, so a burst costs no planning at its due second;
3. send: outside any transaction, at most `send_concurrency` at once; a run's id is its idempotency key;
4. record: outcomes are written in batches; failures are retried with backoff, and a run whose sender died
   (lease ran out) or whose planner did not claim it in time (reservation ran out) is taken over by any
   replica;
5. sleep until `plan_ahead` before the earliest due instant; LISTEN/NOTIFY wakes every replica when a
   change makes it earlier.

Each recorded send is one structured log line (event "dispatch") and one sample of the runs-by-outcome
counter and the lateness histogram (service.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import heapq
import itertools
import logging
import random
import time
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
    # How long before their due instant fires are planned; 0 plans each fire when it is due.
    plan_ahead: dt.timedelta = dt.timedelta(seconds=2)
    # The most planned runs held in memory; beyond it, fires are planned when due.
    max_planned_ahead: int = 20_000
    # How long after its due instant a planned run waits for its planner before any engine takes it over.
    reservation: dt.timedelta = dt.timedelta(seconds=5)
    # How long before their due instant planned runs are claimed, so the claim's round trip is not late.
    claim_lead_seconds: float = 0.02
    # Plan transactions at once while a backlog lasts (each on its own connection).
    planners: int = 2


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
        # Planned ahead, not yet claimed: a heap of (due epoch seconds, tie-breaker, run).
        self._planned: list[tuple[float, int, types.RunToSend]] = []
        self._planned_order = itertools.count()
        self._planned_changed = asyncio.Event()
        # Claimed just ahead of their instant, waiting for it: handed back if the engine stops meanwhile.
        self._armed: list[types.RunToSend] = []

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._backend.start()
        self._listen_task = asyncio.create_task(self._listen_forever(), name="engine-listen")
        self._record_task = asyncio.create_task(self._record_forever(), name="engine-record")
        self._loop_task = asyncio.create_task(self._loop(), name="engine-loop")
        self._fire_task = asyncio.create_task(self._fire_planned_forever(), name="engine-fire")
        for task in (self._listen_task, self._record_task, self._loop_task, self._fire_task):
            task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        """Stop claiming, let in-flight sends finish (up to drain_seconds), hand back the rest, flush."""
        self._stopping.set()
        self._wake.set()
        await asyncio.gather(self._loop_task, self._fire_task, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=self._config.drain_seconds)
        # Leased but never started (the loop stopped while waiting for a send slot or for their instant), or
        # still sending.
        unfinished = [run.run_id for run in self._unstarted + self._armed] + [
            run.run_id for run in self._in_flight.values()
        ]
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
        if self._planned:
            # Should this fail, their reservations run out a few seconds after their instant all the same.
            with contextlib.suppress(errors.ServiceError):
                await self._store.release_planned([run.run_id for _, _, run in self._planned])
            log.info("engine handed back %d runs planned ahead", len(self._planned))
        self._listen_task.cancel()
        await asyncio.gather(self._listen_task, return_exceptions=True)
        await self._backend.close()

    # -- the loop ---------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        more = False
        while not self._stopping.is_set():
            # A backlog (the last round planned a full batch) is worked by several ticks at once: SKIP LOCKED
            # keeps their batches apart, and the database plans one while this process sends another.
            ticks = self._config.planners if more else 1
            outcomes = await asyncio.gather(*(self._tick() for _ in range(ticks)), return_exceptions=True)
            failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            for failure in failures:
                if isinstance(failure, errors.ServiceError):
                    log.warning("engine tick failed, retrying in 1 s: %s", failure.message)
                else:  # a bug must not stop dispatching for good: log it loudly and go on
                    log.error("engine tick failed unexpectedly, retrying in 1 s", exc_info=failure)
            if failures:
                more = False
                await self._sleep(1.0)
                continue
            more = any(outcomes)
            if not more:
                await self._sleep_until_due()

    async def _tick(self) -> bool:
        """One round of plan, send, and claim retries, a batch of each; True when more work may wait."""
        limit = self._config.batch_size
        now = _utcnow()
        lease_until = now + self._config.lease
        until = now + self._plan_ahead()
        # Single fires in the app's zone first: one statement, no trigger to evaluate. Then every other kind.
        planned, missed_single, runs = await self._store.plan_due_single_fires(
            now, until, limit, lease_until, self._config.reservation, self._config.misfire_grace
        )
        missed: list[int] = [missed_single]
        if planned < limit:  # a full batch of single fires: the loop comes straight back for the rest
            planned, other_runs = await self._store.plan_due(
                now, until, limit, lease_until, self._config.reservation, self._plan(now, until, missed)
            )
            runs += other_runs
        metrics.record_missed(sum(missed))  # only once the plan is committed
        self._hold([run for run in runs if run.due_at > now])
        await self._dispatch_all([run for run in runs if run.due_at <= now])
        retries: list[types.RunToSend] = []
        if not self._stopping.is_set():
            retries = await self._store.claim_retries(now, limit, lease_until)
            await self._dispatch_all(retries)
        if now - self._last_sweep >= self._config.sweep_interval:
            self._last_sweep = now
            await self._store.expire_lapsed(now)
        return planned >= limit or len(retries) >= limit

    def _plan_ahead(self) -> dt.timedelta:
        """How far ahead to plan now: not at all while the planned runs in memory are at their limit."""
        if len(self._planned) >= self._config.max_planned_ahead:
            return dt.timedelta(0)
        return self._config.plan_ahead

    def _plan(
        self, now: dt.datetime, until: dt.datetime, missed: list[int]
    ) -> Callable[[types.DueSchedule], dispatch.DuePlan]:
        def plan(schedule: types.DueSchedule) -> dispatch.DuePlan:
            try:
                planned = dispatch.plan_due(
                    schedule.trigger,
                    timing.load_zone(schedule.time_zone),
                    self._config.wave_offsets,
                    schedule.next_fire_at,
                    now,
                    self._config.misfire_grace,
                    until=until,
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
            next_due = await self._store.next_wake(self._plan_ahead())
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
        if self._wake_at is None or fires_at - self._plan_ahead().total_seconds() < self._wake_at:
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

    # -- firing what was planned ahead ------------------------------------------------------------------

    def _hold(self, runs: list[types.RunToSend]) -> None:
        for run in runs:
            heapq.heappush(self._planned, (run.due_at.timestamp(), next(self._planned_order), run))
        if runs:
            self._planned_changed.set()

    async def _fire_planned_forever(self) -> None:
        """Claim planned runs just before their instant, then hand each to the sender at its instant."""
        lead = self._config.claim_lead_seconds
        while not self._stopping.is_set():
            self._planned_changed.clear()
            if not self._planned:
                await _wait_first(self._planned_changed, self._stopping)
                continue
            wait = self._planned[0][0] - lead - time.time()
            if wait > 0:
                # A run planned meanwhile may be due earlier: wake for it too.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(_wait_first(self._planned_changed, self._stopping), timeout=wait)
                continue
            was_full = len(self._planned) >= self._config.max_planned_ahead
            batch: list[types.RunToSend] = []
            horizon = time.time() + lead
            while self._planned and len(batch) < self._config.batch_size and self._planned[0][0] <= horizon:
                batch.append(heapq.heappop(self._planned)[2])
            if was_full:
                self._wake.set()  # room again: the planner may plan ahead
            now = _utcnow()
            try:
                still_planned = await self._store.claim_planned(
                    [run.run_id for run in batch], now, now + self._config.lease
                )
            except errors.ServiceError as exc:
                # Their reservations run out shortly after their instant, and any engine takes them over.
                log.warning("claiming %d planned runs failed: %s", len(batch), exc.message)
                continue
            # Gone from the claim: their task changed, was disabled or deleted, or another engine took them.
            self._armed = [
                dataclasses.replace(run, attempts=run.attempts + 1) for run in batch if run.run_id in still_planned
            ]
            await self._send_armed_on_time()

    async def _send_armed_on_time(self) -> None:
        """Hand the armed runs to the sender, each not before its instant."""
        while self._armed and not self._stopping.is_set():
            due = self._armed[0].due_at
            delay = due.timestamp() - time.time()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                continue
            count = next((i for i, run in enumerate(self._armed) if run.due_at > due), len(self._armed))
            ready, self._armed = self._armed[:count], self._armed[count:]
            await self._dispatch_all(ready)

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
        if log.isEnabledFor(logging.INFO):  # the line's fields cost a burst's CPU even when not logged
            self._log_dispatch(run, result, reported, lateness)
        self._add_result(result)

    @staticmethod
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


