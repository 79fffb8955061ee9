"""The plan loop: turns due fires into runs, exactly once, and holds them for the fire loop.

Each plan transaction locks a batch of due tasks with SKIP LOCKED (any number of replicas share the work),
inserts one run per fire through the one rule of sql/0005 and advances the tasks. What it commits is handed
on at once: the runs due already that it leased (as many as the sender had places for) to the sender, the
others to the planned-ahead heap, its missed runs to the log. It plans no more than the heap has
room for, so planning never outruns what the engine can hold, and while a backlog lasts it runs
`planners` transactions at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable

from service.domain import dispatch, errors, timing, types
from service.engine.ahead import PlannedAhead
from service.engine.clock import Clock
from service.engine.ports import RunQueue
from service.engine.sender import Sender, log_settled
from service.engine.waker import Waker, wait_any

log = logging.getLogger(__name__)


class Planner:
    def __init__(
        self,
        queue: RunQueue,
        ahead: PlannedAhead,
        sender: Sender,
        waker: Waker,
        clock: Clock,
        *,
        lease: dt.timedelta,
        wave_offsets: tuple[int, ...],
        grace: dt.timedelta,
        plan_ahead: dt.timedelta,
        reservation: dt.timedelta,
        batch_size: int,
        planners: int,
        sweep_interval: dt.timedelta,
    ) -> None:
        self._queue = queue
        self._ahead = ahead
        self._sender = sender
        self._lease = lease
        self._waker = waker
        self._clock = clock
        self._wave_offsets = wave_offsets
        self._grace = grace
        self._plan_ahead = plan_ahead
        self._reservation = reservation
        self._batch_size = batch_size
        self._planners = planners
        self._sweep_interval = sweep_interval.total_seconds()
        self._last_sweep = float("-inf")
        # Plans whose answer was lost, by claim token, with the places reserved for what they may have leased.
        self._unanswered: list[tuple[uuid.UUID, int]] = []

    async def run(self, stopping: asyncio.Event) -> None:
        more = False
        while not stopping.is_set():
            room = self._ahead.room
            if room == 0:  # the heap is full: wait until the fire loop makes room
                self._waker.wake.clear()
                await self._waker.sleep_until(None, stopping)
                continue
            # A backlog (the last round planned a full batch) is worked by several transactions at once: SKIP
            # LOCKED keeps their batches apart, and the database plans one while this process sends another.
            ticks = self._planners if more else 1
            limit = max(1, min(self._batch_size, room // ticks))
            reclaimed, *outcomes = await asyncio.gather(
                self.reclaim(), *(self.tick(limit) for _ in range(ticks)), return_exceptions=True
            )
            failures = [outcome for outcome in (reclaimed, *outcomes) if isinstance(outcome, BaseException)]
            for failure in failures:
                if isinstance(failure, errors.ServiceError):
                    log.warning("planning failed, retrying in 1 s: %s", failure.message)
                elif isinstance(failure, Exception):
                    log.error("planning failed unexpectedly, retrying in 1 s", exc_info=failure)
                else:
                    raise failure
            if failures:
                more = False
                await wait_any(stopping, timeout=1.0)
                continue
            more = any(outcomes)
            await self._sweep()
            if not more:
                await self._sleep_until_due(stopping)

    async def tick(self, limit: int) -> bool:
        """One round of planning, a batch of each kind; True when more may be due. Each step's runs are handed
        on as soon as it commits, so a later step's failure strands nothing."""
        single = await self._step(
            limit,
            lambda lease: self._queue.plan_single_fires(self._plan_ahead, limit, self._grace, self._reservation, lease),
        )
        if single.tasks >= limit:  # a full batch of single fires: the loop comes straight back for the rest
            return True
        other = await self._step(
            limit,
            lambda lease: self._queue.plan_due(
                self._plan_ahead, limit, self._grace, self._reservation, self._plan, lease
            ),
        )
        return other.tasks >= limit

    async def _step(self, limit: int, plan: Callable[[types.PlanLease], Awaitable[types.Planned]]) -> types.Planned:
        """One plan statement. It may lease the runs it finds due already, as many as the sender has places free
        now (it never waits for them), which saves those runs a claim; the rest go to the planned-ahead heap.
        What it committed is handed on at once.

        Its round trip does not tell the database's clock: the plan reads clock_timestamp() as it starts and then
        works for up to its whole round trip, so the midpoint of the round trip is not the instant it read. Under
        load such a sample was off by a quarter second and made retries after a 429 go out that much early; the
        clock is measured on the wake-up query and the heartbeat, which read it as they answer."""
        places = self._sender.try_reserve(limit)
        lease = types.PlanLease(self._lease, places, uuid.uuid4())
        try:
            planned = await plan(lease)
        except errors.ServiceError:
            # It may have committed and lost only its answer: reclaim() finds its leased runs by their token,
            # on the places kept for them meanwhile.
            self._unanswered.append((lease.token, places))
            raise
        except BaseException:
            self._sender.unreserve(places)
            raise
        self._sender.unreserve(places - len(planned.leased))
        for run in planned.leased:
            self._sender.send(run)
        self._ahead.hold(planned.runs)
        log_settled(planned.missed)
        return planned

    async def reclaim(self) -> None:
        """Send the runs of plans whose answer was lost, if they committed; give back the places kept for them."""
        while self._unanswered:
            token, places = self._unanswered[0]
            found = await self._queue.reclaim(token)
            self._unanswered.pop(0)
            self._sender.unreserve(places - len(found))
            for run in found:
                self._sender.send(run)

    def _plan(self, schedule: types.DueSchedule, now: dt.datetime, until: dt.datetime) -> dispatch.DuePlan:
        try:
            return dispatch.plan_due(
                schedule.trigger,
                timing.load_zone(schedule.time_zone),
                self._wave_offsets,
                schedule.next_fire_at,
                now,
                until=until,
            )
        except Exception as exc:  # noqa: BLE001 - any failure of one task's maths stops that task, not planning
            # One task whose trigger cannot be planned (a zone removed from tzdata, say) must not block every
            # other: it leaves the valid set now, with the reason kept on it and logged.
            reason = f"cannot be planned: {exc!r}"[:1000]
            log.error(
                "schedule %s %s; it is stopped", schedule.schedule_id, reason,
                extra={"event": "schedule_stopped", "schedule_id": str(schedule.schedule_id), "error": reason},
            )
            return dispatch.DuePlan.stopped(reason)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_sweep >= self._sweep_interval:
            self._last_sweep = loop.time()
            await self._queue.expire_lapsed()

    async def _sleep_until_due(self, stopping: asyncio.Event) -> None:
        # Clear first and accept any notification while we ask: a change landing in between still wakes us.
        self._waker.wake.clear()
        try:
            sent = self._clock.local()
            wake_at, now = await self._queue.next_plan_wake(self._plan_ahead)
            self._clock.observe(sent, now, self._clock.local())
        except errors.ServiceError:
            wake_at = None
        await self._waker.sleep_until(wake_at, stopping)
