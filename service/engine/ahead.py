"""Runs planned ahead: held in memory until their instant, then claimed and handed to the sender.

Just before a run's instant (`claim_lead`), the fire loop reserves send slots, claims no more runs than it
got slots (a change to a task may have dropped its run meanwhile; the claim finds it gone), and hands each to
the sender at its instant by the database's clock. Runs it could not get slots for stay held; should their
reservation run out meanwhile, any engine with free slots takes them over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import itertools
import logging
import uuid
from collections.abc import Callable

from service.domain import errors, types
from service.engine.clock import Clock
from service.engine.ports import RunQueue
from service.engine.sender import Sender
from service.engine.waker import wait_any

log = logging.getLogger(__name__)


class PlannedAhead:
    def __init__(
        self,
        queue: RunQueue,
        sender: Sender,
        clock: Clock,
        *,
        lease: dt.timedelta,
        batch_size: int,
        capacity: int,
        claim_lead_seconds: float = 0.02,
        on_room: Callable[[], None] = lambda: None,
    ) -> None:
        self._queue = queue
        self._sender = sender
        self._clock = clock
        self._lease = lease
        self._batch_size = batch_size
        self._capacity = capacity
        self._lead = claim_lead_seconds
        self._on_room = on_room
        self._heap: list[tuple[float, int, types.RunToSend]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()
        # Claimed, on reserved slots, waiting for their instant: handed back if the engine stops meanwhile.
        self.armed: list[types.RunToSend] = []
        self._holding = 0  # send slots reserved for the batch being fired

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def room(self) -> int:
        """How many more runs may be held (ENGINE_MAX_PLANNED_AHEAD)."""
        return max(0, self._capacity - len(self._heap))

    def hold(self, runs: list[types.RunToSend]) -> None:
        for run in runs:
            heapq.heappush(self._heap, (run.due_at.timestamp(), next(self._order), run))
        if runs:
            self._changed.set()

    def held_ids(self) -> list[uuid.UUID]:
        return [run.run_id for _, _, run in self._heap]

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            self._changed.clear()
            if not self._heap:
                await wait_any(self._changed, stopping)
                continue
            wait = self._clock.seconds_until(self._heap[0][0]) - self._lead
            if wait > 0:
                # A run held meanwhile may be due earlier: wake for it too.
                await wait_any(self._changed, stopping, timeout=wait)
                continue
            slots = await self._sender.reserve(min(self._batch_size, len(self._heap)), stopping)
            if not slots:
                continue
            batch = self._pop_due(slots)
            self._sender.unreserve(slots - len(batch))
            self._holding = len(batch)
            try:
                await self._fire(batch, stopping)
            finally:
                # Slots of runs not started: their runs are handed back by stop(), or their lease runs out.
                self._sender.unreserve(self._holding)
                self._holding = 0

    def _pop_due(self, limit: int) -> list[types.RunToSend]:
        was_full = self.room == 0
        horizon = self._clock.now() + self._lead
        batch: list[types.RunToSend] = []
        while self._heap and len(batch) < limit and self._heap[0][0] <= horizon:
            batch.append(heapq.heappop(self._heap)[2])
        if was_full and batch:
            self._on_room()
        return batch

    async def _claim(self, batch: list[types.RunToSend], stopping: asyncio.Event) -> dict[uuid.UUID, int] | None:
        """Claim the batch, asking again with the same token while the database does not answer: a claim that
        committed but whose answer was lost then returns its runs instead of leaving them to their lease.
        None when the engine stops first (the batch is held again, for stop() to hand back)."""
        token = uuid.uuid4()
        while True:
            try:
                return await self._queue.claim_planned([run.run_id for run in batch], self._lease, token)
            except errors.ServiceError as exc:
                log.warning("claiming %d planned runs failed, retrying: %s", len(batch), exc.message)
                await wait_any(stopping, timeout=0.2)
                if stopping.is_set():
                    self.hold(batch)
                    return None
            except Exception:
                self.hold(batch)  # not lost with the loop: the restarted loop claims them
                raise

    async def _fire(self, batch: list[types.RunToSend], stopping: asyncio.Event) -> None:
        claimed = await self._claim(batch, stopping)
        if claimed is None:
            return
        # Gone from the claim: their task changed, was disabled or deleted, or another engine took them over.
        self.armed = [dataclasses.replace(run, attempts=claimed[run.run_id]) for run in batch if run.run_id in claimed]
        self._give_back(len(batch) - len(self.armed))
        while self.armed and not stopping.is_set():
            due = self.armed[0].due_at
            delay = self._clock.seconds_until(due)
            if delay > 0:
                await wait_any(stopping, timeout=delay)
                continue
            count = next((i for i, run in enumerate(self.armed) if run.due_at > due), len(self.armed))
            ready, self.armed = self.armed[:count], self.armed[count:]
            for run in ready:
                self._holding -= 1
                self._sender.send(run)

    def _give_back(self, slots: int) -> None:
        self._holding -= slots
        self._sender.unreserve(slots)
