"""RunQueue: the engine's side of the database. Plans fires into runs, claims them, records their outcomes.

Every decision of "now" (due, too late, lease run out) is taken by the database's clock inside the statement
(clock_timestamp(); see the engine's statements in queries.sql), and every rule is one SQL function of
sql/0005, so replicas whose clocks differ still agree, and the planning paths cannot drift apart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from service.domain import dispatch, params, types
from service.store.database import Pool, connect_listener, translated
from service.store.queries import SQL

# The most runs one plan transaction inserts. After a long outage the due tasks may owe many missed fires
# each (service.domain.dispatch.MAX_FIRES_PER_PLAN bounds one task); past this many rows the transaction
# leaves the rest of its locked tasks as they were, for the next round.
MAX_RUNS_PER_PLAN = 5000


def _run_to_send(row: asyncpg.Record, push: dict[str, Any], app_key: str, zone_type: int,
                 push_key: str | None, push_secret_encrypted: bytes | None, defaults: dict[str, str] | None, *,
                 still_wanted: bool = True, attempts: int = 0) -> types.RunToSend:
    """A run to send. A run a caller triggered (trigger_id set) has no zone_type 2 wave: it goes to the whole
    audience at once, with the values the caller gave over the task's defaults."""
    triggered = row.get("trigger_id") is not None
    return types.RunToSend(
        run_id=row["id"],
        schedule_id=types.ScheduleId(row["schedule_id"]),
        app_key=types.AppKey(app_key),
        due_at=row["due_at"],
        utc_offset_minutes=row["utc_offset_minutes"] if zone_type == 2 and not triggered else None,
        attempts=attempts,
        push=push,
        push_key=push_key,
        push_secret_encrypted=None if push_secret_encrypted is None else bytes(push_secret_encrypted),
        still_wanted=still_wanted,
        params=params.effective(defaults, row.get("run_params")),
    )


def _whole_run(row: asyncpg.Record, *, attempts: int = 0, still_wanted: bool = True) -> types.RunToSend:
    """A run whose row carries its task's push and parameters, and its app's credentials."""
    return _run_to_send(row, row["push"], row["app_key"], row["zone_type"], row["push_key"],
                        row["push_secret_encrypted"], row["params"], attempts=attempts, still_wanted=still_wanted)


def _settled(row: asyncpg.Record, state: types.RunState) -> types.SettledRun:
    return types.SettledRun(row["id"], types.ScheduleId(row["schedule_id"]), row["due_at"], state, row["error"])


class RunQueue:
    """The engine's statements, on the engine's own pool."""

    def __init__(self, pool: Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn

    @translated
    async def plan_single_fires(
        self, ahead: dt.timedelta, limit: int, grace: dt.timedelta, reservation: dt.timedelta, lease: types.PlanLease
    ) -> types.Planned:
        """Plan step for single zone_type 1 tasks, the common case, in one round trip (sql/0005)."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(
                SQL["plan_single_fires"], ahead, limit, grace, reservation, lease.duration, lease.count, lease.token
            )
        return types.Planned(
            tasks=len(rows),
            runs=[_whole_run(row) for row in rows if row["state"] == "planned"],
            missed=[_settled(row, "missed") for row in rows if row["state"] == "missed"],
            now=rows[0]["planned_at"] if rows else None,
            leased=[_whole_run(row, attempts=row["attempts"]) for row in rows if row["state"] == "sending"],
        )

    @translated
    async def plan_due(
        self,
        ahead: dt.timedelta,
        limit: int,
        grace: dt.timedelta,
        reservation: dt.timedelta,
        plan: Callable[[types.DueSchedule, dt.datetime, dt.datetime], dispatch.DuePlan],
        lease: types.PlanLease,
    ) -> types.Planned:
        """Plan step for every other task, in one short transaction: lock the tasks due within `ahead` (SKIP
        LOCKED), let `plan(task, now, until)` compute their fires by the domain's maths, insert the runs through
        the one rule (sql/0005 insert_runs) and advance the tasks. At most MAX_RUNS_PER_PLAN runs."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(SQL["prefer_ordered_index_scans"])
            rows = await connection.fetch(SQL["lock_due_schedules"], ahead, limit)
            if not rows:
                return types.Planned(0, [], [], None)
            now = rows[0]["now"]
            until = now + ahead
            due: dict[uuid.UUID, types.DueSchedule] = {}
            fires: tuple[list[Any], ...] = ([], [], [], [])
            advanced: tuple[list[Any], ...] = ([], [], [])
            for row in rows:
                if due and len(fires[0]) >= MAX_RUNS_PER_PLAN:
                    break  # the tasks left over stay locked until commit, unchanged, and come next round
                schedule = types.DueSchedule(
                    schedule_id=types.ScheduleId(row["id"]),
                    app_key=types.AppKey(row["app_key"]),
                    trigger=row["trigger"],
                    push=row["push"],
                    zone_type=row["zone_type"],
                    next_fire_at=row["next_fire_at"],
                    time_zone=row["time_zone"],
                    push_key=row["push_key"],
                    push_secret_encrypted=row["push_secret_encrypted"],
                    params=row["params"],
                )
                due[schedule.schedule_id] = schedule
                planned = plan(schedule, now, until)
                for fire in planned.fires:
                    for column, value in zip(
                        fires,
                        (schedule.schedule_id, fire.due_at, fire.utc_offset_minutes, fire in planned.superseded),
                        strict=True,
                    ):
                        column.append(value)
                for column, value in zip(
                    advanced, (schedule.schedule_id, planned.next_fire_at, planned.stopped_reason), strict=True
                ):
                    column.append(value)
            inserted = await connection.fetch(
                SQL["insert_runs"], *fires, now, grace, reservation, lease.duration, lease.count, lease.token
            )
            await connection.execute(SQL["advance_schedules"], *advanced)
        runs: list[types.RunToSend] = []
        leased: list[types.RunToSend] = []
        missed: list[types.SettledRun] = []
        for row in inserted:
            if row["state"] == "missed":
                missed.append(_settled(row, "missed"))
                continue
            schedule = due[row["schedule_id"]]
            run = _run_to_send(row, schedule.push, schedule.app_key, schedule.zone_type, schedule.push_key,
                               schedule.push_secret_encrypted, schedule.params, attempts=row["attempts"])
            (leased if row["state"] == "sending" else runs).append(run)
        return types.Planned(len(due), runs, missed, now, leased)

    @translated
    async def reclaim(self, token: uuid.UUID) -> list[types.RunToSend]:
        """The runs leased under `token` by a plan or claim whose answer was lost, still leased."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(SQL["reclaim_runs"], token)
        return [_whole_run(row, attempts=row["attempts"]) for row in rows]

    @translated
    async def claim_planned(
        self, run_ids: Sequence[uuid.UUID], lease: dt.timedelta, token: uuid.UUID
    ) -> dict[uuid.UUID, int]:
        """Lease planned runs for sending, the lease counted from now; returns the attempt number of each one
        still planned (not dropped by a change to its task, nor taken over). Asked again with the same `token`
        after a failure, it returns the runs that claim leased if it committed after all."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(SQL["claim_planned_runs"], list(run_ids), lease, token)
        return {row["id"]: row["attempts"] for row in rows}

    @translated
    async def release_planned(self, run_ids: Sequence[uuid.UUID], timeout: float | None = None) -> None:
        """Shutdown: planned runs any engine may take over at their due instant."""
        if run_ids:
            async with self._pool.acquire(timeout) as connection:
                await connection.execute(SQL["release_planned_runs"], list(run_ids), timeout=timeout)

    @translated
    async def claim_due(
        self, limit: int, lease: dt.timedelta, grace: dt.timedelta, max_attempts: int, token: uuid.UUID
    ) -> tuple[list[types.RunToSend], list[types.SettledRun]]:
        """Lease at most `limit` due retries and taken-over runs; settle on the way the ones past their chance
        (missed: later than the grace; failed: a lease ran out on the last attempt). Asked again with the same
        `token` after a failure, it also returns the runs that claim leased if it committed after all."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(SQL["claim_due_runs"], limit, lease, grace, max_attempts, token)
        runs = [
            _whole_run(row, attempts=row["attempts"], still_wanted=row["still_wanted"])
            for row in rows
            if row["outcome"] == "claimed"
        ]
        settled = [_settled(row, row["outcome"]) for row in rows if row["outcome"] != "claimed"]
        return runs, settled

    @translated
    async def record_results(self, results: Sequence[types.RunResult]) -> list[types.DisabledByFailures]:
        """Write a batch of send outcomes in one round trip, each fenced on its attempt, with their tasks' last
        run and count of consecutive failures (sql/0008 record_run_results); returns the tasks that reached
        their max_failures and were disabled."""
        if not results:
            return []
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(
                SQL["record_run_results"],
                [result.run_id for result in results],
                [result.attempts for result in results],
                [result.state for result in results],
                [result.msg_id for result in results],
                [result.error for result in results],
                [result.next_attempt_at for result in results],
                [result.finished_at for result in results],
                [result.payload for result in results],
            )
        return [
            types.DisabledByFailures(
                types.ScheduleId(row["schedule_id"]), types.AppKey(row["app_key"]), row["consecutive_failures"],
                row["max_failures"], row["error"],
            )
            for row in rows
        ]

    @translated
    async def release_runs(self, held: Sequence[tuple[uuid.UUID, int]], timeout: float | None = None) -> None:
        """Give leased runs (id, attempt) back for immediate pickup (graceful shutdown)."""
        if held:
            async with self._pool.acquire(timeout) as connection:
                await connection.execute(
                    SQL["release_runs"], [run_id for run_id, _ in held], [attempts for _, attempts in held],
                    timeout=timeout,
                )

    @translated
    async def next_plan_wake(self, plan_ahead: dt.timedelta) -> tuple[dt.datetime | None, dt.datetime]:
        """When the planner has work next (None: no fire stored), and the database's instant now."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(SQL["next_plan_wake"], plan_ahead)
        return row["wake_at"], row["now"]

    @translated
    async def next_claim_wake(self) -> tuple[dt.datetime | None, dt.datetime]:
        """When claim_due has work next (None: no retry or lease waits), and the database's instant now."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(SQL["next_claim_wake"])
        return row["wake_at"], row["now"]

    @translated
    async def database_clock(self) -> dt.datetime:
        async with self._pool.acquire() as connection:
            now: dt.datetime = await connection.fetchval(SQL["database_clock"])
        return now

    @translated
    async def expire_lapsed(self) -> int:
        async with self._pool.acquire() as connection:
            status = await connection.execute(SQL["expire_lapsed_schedules"])
        return int(status.split()[-1])

    @translated
    async def purge_ended_schedules(self, retention: dt.timedelta, tasks: int, runs: int) -> tuple[int, int]:
        """Retention: one transaction purging at most `tasks` tasks deleted or expired longer than `retention`
        ago, with at most `runs` of their runs (sql/0007). Returns (tasks purged, runs purged)."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(SQL["purge_ended_schedules"], retention, tasks, runs)
        return row["schedules"], row["runs"]

    @translated
    async def purge_old_runs(self, retention: dt.timedelta, limit: int) -> int:
        """Retention: one transaction purging at most `limit` runs in a final state that were created and ended
        longer than `retention` ago. Returns how many went."""
        async with self._pool.acquire() as connection:
            status = await connection.execute(SQL["purge_old_runs"], retention, limit)
        return int(status.split()[-1])

    @translated
    async def purge_old_triggers(self, retention: dt.timedelta, limit: int) -> int:
        """Retention: at most `limit` triggered runs created longer than `retention` ago whose pushes are all
        purged. Returns how many went."""
        async with self._pool.acquire() as connection:
            status = await connection.execute(SQL["purge_old_triggers"], retention, limit)
        return int(status.split()[-1])

    @translated
    async def purge_deleted_apps(self, retention: dt.timedelta) -> int:
        """Retention: the apps deleted longer than `retention` ago that have no task left. Returns how many."""
        async with self._pool.acquire() as connection:
            status = await connection.execute(SQL["purge_deleted_apps"], retention)
        return int(status.split()[-1])

    async def listen(self, callback: Callable[[str], None], timeout: float) -> Listener:
        """A dedicated connection LISTENing for schedule changes; `callback(payload)` on each notification."""
        return Listener(await connect_listener(self._dsn, timeout, callback))


class Listener:
    """The LISTEN connection, with the heartbeat that finds a half-open socket."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def heartbeat(self, timeout: float) -> dt.datetime:
        """The database's instant, asked on this connection; raises when the connection is gone."""
        now: dt.datetime = await asyncio.wait_for(self._connection.fetchval(SQL["database_clock"]), timeout)
        return now

    async def close(self) -> None:
        if not self._connection.is_closed():
            await asyncio.wait_for(self._connection.close(), 1.0)
