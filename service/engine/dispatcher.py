"""The engine: plans due fires exactly once, sends them through a push backend, records the results.

It is made of parts, each small enough to hold in mind and tested on its own:
- `waker.Waker`: LISTEN/NOTIFY with a heartbeat, and the sleeps until work is due;
- `planner.Planner`: the plan loop (fires -> runs, exactly once, by the rules of sql/0005);
- `ahead.PlannedAhead`: runs held until their instant, claimed and handed to the sender on time;
- `claimer.Claimer`: retries, and runs whose holder died, taken over;
- `sender.Sender`: at most SEND_CONCURRENCY pushes in flight, and no lease without a free slot;
- `recorder.Recorder`: outcomes written back in batches, fenced on the attempt, never dropped;
- `retention.Retention`: purges, in short batches, what RETENTION_DAYS no longer keeps;
- `supervisor.Supervisor`: restarts a loop that crashed, and reports it down meanwhile (/readyz fails);
- `clock.Clock`: the database's clock, by which every part waits.

Any number of processes may share one database. Each recorded send is one structured log line (event
"dispatch") and one sample of the runs-by-outcome counter and the lateness histogram (service.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging

from service.domain import dispatch, errors, timing, types
from service.engine.ahead import PlannedAhead
from service.engine.backends import PushBackend
from service.engine.claimer import Claimer
from service.engine.clock import Clock
from service.engine.planner import Planner
from service.engine.ports import RunQueue
from service.engine.recorder import Recorder
from service.engine.retention import Retention
from service.engine.sender import Sender
from service.engine.supervisor import Supervisor
from service.engine.waker import Waker

log = logging.getLogger(__name__)

# The loops that lease work; stop() ends them first, so nothing new is claimed while the rest drains.
_CLAIMING_LOOPS = ["planner", "fire", "claimer"]
# Stopped with them: a retention batch in progress is short, and nothing waits for the next one.
_FIRST_TO_STOP = [*_CLAIMING_LOOPS, "retention"]
# How long a claiming loop may take to notice the stop before it is cancelled.
_LOOP_STOP_SECONDS = 0.5
# What stop() keeps for its last writes (flush results, hand runs back), out of drain_seconds.
_HAND_BACK_SECONDS = 1.5


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    wave_offsets: tuple[int, ...] = timing.REAL_UTC_OFFSETS_MINUTES
    misfire_grace: dt.timedelta = dt.timedelta(minutes=5)
    batch_size: int = 500
    send_concurrency: int = 200
    lease: dt.timedelta = dt.timedelta(seconds=60)
    retry: dispatch.RetryPolicy = dataclasses.field(default_factory=dispatch.RetryPolicy)
    # The safety net: the longest sleep, should a notification ever be lost.
    max_idle_seconds: float = 5.0
    # SIGTERM: the whole stop, in-flight sends included, within this many seconds (Docker's and Kubernetes'
    # default stop grace is 10 s).
    drain_seconds: float = 10.0
    sweep_interval: dt.timedelta = dt.timedelta(minutes=1)
    # How long before their due instant fires are planned; 0 plans each fire when it is due.
    plan_ahead: dt.timedelta = dt.timedelta(seconds=2)
    # The most planned runs held in memory (at least a batch); planning waits for room beyond it.
    max_planned_ahead: int = 20_000
    # How long after its due instant a planned run waits for its planner before any engine takes it over.
    reservation: dt.timedelta = dt.timedelta(seconds=5)
    # How long before their due instant planned runs are claimed, so the claim's round trip is not late.
    claim_lead_seconds: float = 0.02
    # Plan transactions at once while a backlog lasts (each on its own connection).
    planners: int = 2
    # How often the LISTEN connection is checked, so a half-open socket is noticed.
    heartbeat_seconds: float = 5.0
    # Terminal runs, and tasks deleted or expired, are purged this long after their end; None keeps them forever.
    retention: dt.timedelta | None = dt.timedelta(days=90)
    # The most runs one retention transaction purges.
    retention_batch_size: int = 2000


class Engine:
    def __init__(
        self, queue: RunQueue, backend: PushBackend, config: EngineConfig, clock: Clock | None = None
    ) -> None:
        self._queue = queue
        self._backend = backend
        self._config = config
        self._stopping = asyncio.Event()
        self.clock = clock or Clock()
        self.supervisor = Supervisor(self._stopping)
        self.waker = Waker(
            queue, self.clock, plan_ahead=config.plan_ahead, max_idle_seconds=config.max_idle_seconds,
            heartbeat_seconds=config.heartbeat_seconds,
        )
        self.recorder = Recorder(queue, self._recorded)
        self.sender = Sender(backend, config.send_concurrency, config.retry, self.recorder.add, self.clock)
        self.ahead = PlannedAhead(
            queue, self.sender, self.clock, lease=config.lease, batch_size=config.batch_size,
            # Every run goes through the heap (runs due now pass straight through): never less than a batch.
            capacity=max(config.max_planned_ahead, config.batch_size), claim_lead_seconds=config.claim_lead_seconds,
            on_room=self.waker.poke,
        )
        self.planner = Planner(
            queue, self.ahead, self.sender, self.waker, self.clock, lease=config.lease,
            wave_offsets=config.wave_offsets,
            grace=config.misfire_grace, plan_ahead=config.plan_ahead, reservation=config.reservation,
            batch_size=config.batch_size, planners=config.planners, sweep_interval=config.sweep_interval,
        )
        self.claimer = Claimer(
            queue, self.sender, self.clock,
            # At most half the sender's places per claim: a claim holds them for its round trip, and the planner
            # (which never waits for places) and the fire loop need some meanwhile.
            batch_size=min(config.batch_size, max(1, config.send_concurrency // 2)), lease=config.lease,
            grace=config.misfire_grace,
            max_attempts=config.retry.max_attempts, max_idle_seconds=config.max_idle_seconds,
        )
        self.waker.on_runs_queued = self.claimer.wake.set  # a caller triggered runs: claim them now
        self.retention = None if config.retention is None else Retention(
            queue, retention=config.retention, batch_size=config.retention_batch_size,
            interval=config.sweep_interval,
            # Sends in flight, or runs planned ahead (a burst is near): the purge waits (service.engine.retention).
            busy=lambda: self.sender.in_flight > 0 or len(self.ahead) > 0,
        )

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._backend.start()
        with contextlib.suppress(errors.ServiceError):  # the loops measure it again on every round trip
            sent = self.clock.local()
            now = await self._queue.database_clock()
            self.clock.observe(sent, now, self.clock.local())
        stopping = self._stopping
        self.supervisor.spawn("waker", lambda: self.waker.run(stopping))
        self.supervisor.spawn("recorder", lambda: self.recorder.run(stopping))
        self.supervisor.spawn("planner", lambda: self.planner.run(stopping))
        self.supervisor.spawn("fire", lambda: self.ahead.run(stopping))
        self.supervisor.spawn("claimer", lambda: self.claimer.run(stopping))
        retention = self.retention
        if retention is not None:
            self.supervisor.spawn("retention", lambda: retention.run(stopping))

    def problem(self) -> str | None:
        """Why the engine cannot do its work right now (for /readyz), or None."""
        down = self.supervisor.down
        return None if not down else "engine loop down: " + ", ".join(sorted(down))

    async def stop(self) -> None:
        """Stop claiming, let in-flight sends finish, record their outcomes, and hand back everything this
        engine still holds (unfinished sends, runs claimed for their instant, runs planned ahead), so any
        replica takes them at once. The whole stop takes at most `drain_seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.drain_seconds
        self._stopping.set()
        self.waker.poke()
        await self.supervisor.stop(_FIRST_TO_STOP, _LOOP_STOP_SECONDS)
        unfinished = await self.sender.drain(deadline - _HAND_BACK_SECONDS - loop.time())
        unfinished += [(run.run_id, run.attempts) for run in self.ahead.armed]
        await self.supervisor.stop(["recorder"], _LOOP_STOP_SECONDS)
        if not await self.recorder.flush(deadline=deadline - _HAND_BACK_SECONDS / 2):
            log.warning("engine stopped with %d results unrecorded; their leases run out and they are resent",
                        len(self.recorder))
        timeout = max(0.1, (deadline - loop.time()) / 2)
        with contextlib.suppress(errors.ServiceError, asyncio.TimeoutError):
            await self._queue.release_runs(unfinished, timeout=timeout)
            if unfinished:
                log.info("engine handed back %d unfinished sends", len(unfinished))
        held = self.ahead.held_ids()
        # Should this fail, their reservations run out a few seconds after their instant all the same.
        with contextlib.suppress(errors.ServiceError, asyncio.TimeoutError):
            await self._queue.release_planned(held, timeout=timeout)
            if held:
                log.info("engine handed back %d runs planned ahead", len(held))
        await self.supervisor.stop(["waker"], 0)
        await self._backend.close()

    def _recorded(self, batch: list[types.RunResult]) -> None:
        if any(result.state == "pending" for result in batch):
            self.claimer.wake.set()  # a retry may now be the earliest work
