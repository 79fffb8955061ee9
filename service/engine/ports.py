"""What the engine needs of the database: the run queue, as a Protocol, so each part is tested on its own
against the real store (service.store.runqueue.RunQueue) without knowing how it is built."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from service.domain import dispatch, types


class RunQueue(Protocol):
    async def plan_single_fires(
        self,
        ahead: dt.timedelta,
        limit: int,
        grace: dt.timedelta,
        reservation: dt.timedelta,
        lease: types.PlanLease,
    ) -> types.Planned: ...

    async def plan_due(
        self,
        ahead: dt.timedelta,
        limit: int,
        grace: dt.timedelta,
        reservation: dt.timedelta,
        plan: Callable[[types.DueSchedule, dt.datetime, dt.datetime], dispatch.DuePlan],
        lease: types.PlanLease,
    ) -> types.Planned: ...

    async def reclaim(self, token: uuid.UUID) -> list[types.RunToSend]: ...

    async def claim_planned(
        self, run_ids: Sequence[uuid.UUID], lease: dt.timedelta, token: uuid.UUID
    ) -> dict[uuid.UUID, int]: ...

    async def release_planned(self, run_ids: Sequence[uuid.UUID], timeout: float | None = None) -> None: ...

    async def claim_due(
        self, limit: int, lease: dt.timedelta, grace: dt.timedelta, max_attempts: int, token: uuid.UUID
    ) -> tuple[list[types.RunToSend], list[types.SettledRun]]: ...

    async def record_results(self, results: Sequence[types.RunResult]) -> list[types.DisabledByFailures]: ...

    async def release_runs(self, held: Sequence[tuple[uuid.UUID, int]], timeout: float | None = None) -> None: ...

    async def next_plan_wake(self, plan_ahead: dt.timedelta) -> tuple[dt.datetime | None, dt.datetime]: ...

    async def next_claim_wake(self) -> tuple[dt.datetime | None, dt.datetime]: ...

    async def database_clock(self) -> dt.datetime: ...

    async def expire_lapsed(self) -> int: ...

    async def purge_ended_schedules(self, retention: dt.timedelta, tasks: int, runs: int) -> tuple[int, int]: ...

    async def purge_old_runs(self, retention: dt.timedelta, limit: int) -> int: ...

    async def purge_old_triggers(self, retention: dt.timedelta, limit: int) -> int: ...

    async def purge_deleted_apps(self, retention: dt.timedelta) -> int: ...

    async def listen(self, callback: Callable[[str], None], timeout: float) -> Listener: ...


class Listener(Protocol):
    async def heartbeat(self, timeout: float) -> dt.datetime: ...

    async def close(self) -> None: ...
