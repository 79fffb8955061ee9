"""The claimer: due retries, and runs whose holder died, taken over.

It claims runs whose retry is due, 'sending' runs whose lease ran out (their holder died) and 'planned' runs
whose planner did not claim them in time (its reservation ran out), no more than the sender has places for,
and settles on the way those past their chance (missed, failed), each logged. It sleeps until the next such
instant by the database's clock, or until a result recorded as a retry wakes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

from service.domain import errors
from service.engine.clock import Clock
from service.engine.ports import RunQueue
from service.engine.sender import Sender, log_settled
from service.engine.waker import wait_any

log = logging.getLogger(__name__)


class Claimer:
    """Claims due retries and takes over runs whose holder's lease or reservation ran out, no more than the
    sender has places for; settles on the way the runs past their chance (missed, failed)."""

    def __init__(
        self,
        queue: RunQueue,
        sender: Sender,
        clock: Clock,
        *,
        batch_size: int,
        lease: dt.timedelta,
        grace: dt.timedelta,
        max_attempts: int,
        max_idle_seconds: float,
    ) -> None:
        self._queue = queue
        self._sender = sender
        self._clock = clock
        self._batch_size = batch_size
        self._lease = lease
        self._grace = grace
        self._max_attempts = max_attempts
        self._max_idle = max_idle_seconds
        self.wake = asyncio.Event()  # a result was recorded as pending: a retry may now be the earliest work
        self._token = uuid.uuid4()  # names the next claim (sql/0005 claim_due_runs)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            slots = await self._sender.reserve(self._batch_size, stopping)
            if not slots:
                continue
            try:
                runs, settled = await self._queue.claim_due(
                    slots, self._lease, self._grace, self._max_attempts, self._token
                )
            except errors.ServiceError as exc:
                # The claim may have committed and lost only its answer: the next one asks with the same token,
                # and the runs it leased come back then.
                self._sender.unreserve(slots)
                log.warning("claiming due runs failed, retrying in 1 s: %s", exc.message)
                await wait_any(stopping, timeout=1.0)
                continue
            except BaseException:
                self._sender.unreserve(slots)
                raise
            self._token = uuid.uuid4()  # answered: the next claim is a new one
            self._sender.unreserve(slots - len(runs))
            for run in runs:
                self._sender.send(run)
            log_settled(settled)
            if len(runs) + len(settled) < slots:
                await self._sleep_until_due(stopping)

    async def _sleep_until_due(self, stopping: asyncio.Event) -> None:
        self.wake.clear()
        try:
            wake_at, _ = await self._queue.next_claim_wake()
        except errors.ServiceError:
            wake_at = None
        timeout = self._max_idle
        if wake_at is not None:
            timeout = min(timeout, max(0.0, self._clock.seconds_until(wake_at)))
        await wait_any(self.wake, stopping, timeout=timeout)
