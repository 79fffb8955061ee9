"""The Store: the only caller of asyncpg. Rows become domain objects here, and driver errors domain errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import asyncpg

from service.domain import dispatch, errors, types
from service.store import migrations
from service.store.queries import SQL

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Failures that mean "the database is not there right now": the client may retry (28203). Disk full and
# other resource exhaustion (class 53) belong here too: the write was not acknowledged, nothing is lost.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
)


def _translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Driver errors stop at this edge: unavailability becomes DatabaseUnavailable, domain errors pass."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except errors.ServiceError:
            raise
        except _UNAVAILABLE as exc:
            log.warning("database unavailable in %s: %r", method.__name__, exc)
            raise errors.DatabaseUnavailable() from exc

    return wrapper


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release without asyncpg's RESET ALL / UNLISTEN round trip: pool connections never change session
    state (LISTEN and advisory locks use dedicated connections); asyncpg still rolls back an open transaction."""


async def register_json_codecs(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            encoder=lambda value: json.dumps(value, ensure_ascii=False, separators=(",", ":")),
            decoder=json.loads,
            schema="pg_catalog",
        )


def _app(row: asyncpg.Record) -> types.App:
    return types.App(
        app_key=types.AppKey(row["app_key"]),
        name=row["name"],
        time_zone=row["time_zone"],
        max_schedules=row["max_schedules"],
        created_at=row["created_at"],
    )


NOTIFY_CHANNEL = "schedule_changes"


async def _notify_next_fire(connection: asyncpg.Connection, next_fire_at: dt.datetime) -> None:
    """Tell every engine (on commit) that a task now fires at `next_fire_at` (epoch seconds)."""
    await connection.execute(SQL["notify_schedule_change"], str(next_fire_at.timestamp()))


def _due_schedule(row: asyncpg.Record) -> types.DueSchedule:
    return types.DueSchedule(
        schedule_id=types.ScheduleId(row["id"]),
        app_key=types.AppKey(row["app_key"]),
        trigger=row["trigger"],
        push=row["push"],
        next_fire_at=row["next_fire_at"],
        time_zone=row["time_zone"],
        push_key=row["push_key"],
        push_secret_encrypted=row["push_secret_encrypted"],
    )


def _run_to_send(
    row: asyncpg.Record,
    app_key: str,
    push: dict[str, Any],
    push_key: str | None,
    push_secret_encrypted: bytes | None,
    *,
    is_wave: bool,
    still_wanted: bool,
) -> types.RunToSend:
    return types.RunToSend(
        run_id=row["id"],
        schedule_id=types.ScheduleId(row["schedule_id"]),
        app_key=types.AppKey(app_key),
        due_at=row["due_at"],
        utc_offset_minutes=row["utc_offset_minutes"] if is_wave else None,
        attempts=row["attempts"],
        push=push,
        push_key=push_key,
        push_secret_encrypted=None if push_secret_encrypted is None else bytes(push_secret_encrypted),
        still_wanted=still_wanted,
    )


def _run_to_send_from_row(row: asyncpg.Record, *, is_wave: bool, still_wanted: bool) -> types.RunToSend:
    """A run whose row carries its task's push and its app's credentials (claims and single-fire plans)."""
    return _run_to_send(
        row,
        row["app_key"],
        row["push"],
        row["push_key"],
        row["push_secret_encrypted"],
        is_wave=is_wave,
        still_wanted=still_wanted,
    )


def _schedule(row: asyncpg.Record) -> types.Schedule:
    return types.Schedule(
        schedule_id=types.ScheduleId(row["id"]),
        app_key=types.AppKey(row["app_key"]),
        name=row["name"],
        enabled=row["enabled"],
        trigger=row["trigger"],
        push=row["push"],
        created_at=row["created_at"],
        final_fire_at=row["final_fire_at"],
    )


class Store:
    """Every read and write of the service, each one short and in its own transaction where it writes."""

    def __init__(
        self, pool: asyncpg.Pool, *, acquire_timeout: float, dsn: str, wake_horizon: dt.timedelta | None = None
    ) -> None:
        self._pool = pool
        # None: every change notifies the engines (see _wakes_engines).
        self._wake_horizon = wake_horizon
        self._acquire_timeout = acquire_timeout
        self._connect_args = {"dsn": dsn, "timeout": acquire_timeout}

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 5.0,
        wake_horizon: dt.timedelta | None = None,
    ) -> Store:
        """Open a pool; `timeout` bounds connecting, acquiring and every statement."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                command_timeout=timeout,
                init=register_json_codecs,
                reset=_keep_session,
            )
        except _UNAVAILABLE as exc:
            raise errors.DatabaseUnavailable() from exc
        assert pool is not None
        return cls(pool, acquire_timeout=timeout, dsn=dsn, wake_horizon=wake_horizon)

    async def close(self) -> None:
        await self._pool.close()

    def _acquire(self) -> Any:
        return self._pool.acquire(timeout=self._acquire_timeout)

    # -- apps -------------------------------------------------------------------------------------------

    @_translated
    async def create_app(
        self,
        app_key: str,
        name: str,
        secret_sha256: bytes,
        time_zone: str,
        max_schedules: int,
        push_key: str | None = None,
        push_secret_encrypted: bytes | None = None,
    ) -> types.App:
        async with self._acquire() as connection:
            row = await connection.fetchrow(
                SQL["insert_app"],
                app_key,
                name,
                secret_sha256,
                time_zone,
                max_schedules,
                push_key,
                push_secret_encrypted,
            )
        return _app(row)

    @_translated
    async def list_apps(self) -> list[types.App]:
        async with self._acquire() as connection:
            return [_app(row) for row in await connection.fetch(SQL["list_apps"])]

    @_translated
    async def count_apps(self) -> int:
        async with self._acquire() as connection:
            return await connection.fetchval(SQL["count_apps"])

    @_translated
    async def get_app_with_secret_digest(self, app_key: str) -> tuple[types.App, bytes] | None:
        async with self._acquire() as connection:
            row = await connection.fetchrow(SQL["get_app"], app_key)
        return None if row is None else (_app(row), bytes(row["secret_sha256"]))

    # -- schedules --------------------------------------------------------------------------------------

    @_translated
    async def create_schedule(
        self, app_key: str, values: types.ScheduleValues, cid: str | None, now: dt.datetime
    ) -> tuple[types.ScheduleId, str]:
        """Insert a task unless the app reached its cap; a cid already used returns the first task instead.

        One round trip: the SQL function create_schedule (sql/0003) locks the app, checks cid and cap, inserts
        and notifies, in one implicit transaction."""
        plan = values.plan
        assert plan is not None
        async with self._acquire() as connection:
            row = await connection.fetchrow(
                SQL["create_schedule"],
                uuid.uuid4(),
                app_key,
                values.name,
                values.enabled,
                values.trigger,
                values.push,
                cid,
                plan.next_fire_at,
                plan.final_fire_at,
                now,
                [fire.due_at for fire in plan.skipped],
                [fire.utc_offset_minutes for fire in plan.skipped],
                self._wakes_engines(plan.next_fire_at, now),
            )
        if row["outcome"] == "full":
            raise errors.InvalidParameter(
                f"schedule: the app already has {row['valid']} valid tasks, its cap is {row['cap']}"
            )
        if row["outcome"] == "no_app":
            raise errors.AuthenticationFailed()
        return types.ScheduleId(row["id"]), row["name"]

    def _wakes_engines(self, next_fire_at: dt.datetime, now: dt.datetime) -> bool:
        """Whether a change that makes a task fire at `next_fire_at` must NOTIFY the engines.

        Every engine looks at the database again at least every `wake_horizon` (its longest sleep, plus how
        far ahead it plans), so a later fire is found without a notification. NOTIFY is not free: on commit
        it takes a database-wide lock that serializes every notifying transaction."""
        return self._wake_horizon is None or next_fire_at <= now + self._wake_horizon

    @staticmethod
    async def _record_skipped(
        connection: asyncpg.Connection, schedule_id: types.ScheduleId, plan: types.FirePlan
    ) -> None:
        if plan.skipped:
            await connection.execute(
                SQL["insert_skipped_runs"],
                schedule_id,
                [fire.due_at for fire in plan.skipped],
                [fire.utc_offset_minutes for fire in plan.skipped],
            )

    @_translated
    async def list_schedules(
        self, app_key: str, now: dt.datetime, limit: int, offset: int
    ) -> tuple[int, list[types.Schedule]]:
        """One page of the app's valid tasks and their total, read in one snapshot."""
        async with self._acquire() as connection, connection.transaction(
            isolation="repeatable_read", readonly=True
        ):
            total = await connection.fetchval(SQL["count_valid_schedules"], app_key, now)
            rows = await connection.fetch(SQL["list_valid_schedules"], app_key, now, limit, offset)
        return total, [_schedule(row) for row in rows]

    @_translated
    async def get_schedule(
        self, app_key: str, schedule_id: types.ScheduleId, now: dt.datetime
    ) -> types.Schedule | None:
        async with self._acquire() as connection:
            row = await connection.fetchrow(SQL["get_valid_schedule"], schedule_id, app_key, now)
        return None if row is None else _schedule(row)

    @_translated
    async def update_schedule(
        self,
        app_key: str,
        schedule_id: types.ScheduleId,
        now: dt.datetime,
        apply: Callable[[types.Schedule], types.ScheduleValues],
        in_flight_wait: float = 0.0,
    ) -> types.Schedule:
        """Lock the task, let `apply` compute its new values from the current ones, and write them.

        Unknown, other app's or deleted: ScheduleNotFound. Expired: InvalidParameter (the contract's 28100).
        Disabling cancels queued retries and returns only once no send of the task is in flight (up to
        `in_flight_wait` seconds), so nothing fires after the call returned.
        """
        async with self._acquire() as connection, connection.transaction():
            row = await connection.fetchrow(SQL["lock_schedule"], schedule_id, app_key)
            if row is None:
                raise errors.ScheduleNotFound()
            current = _schedule(row)
            if row["state"] == "expired" or current.final_fire_at <= now:
                raise errors.InvalidParameter("schedule: has expired and can no longer be updated")
            values = apply(current)
            plan = values.plan
            # Fires planned ahead from the old values go; with the trigger unchanged, they are planned again
            # (from the new push) from the earliest of them.
            dropped = await connection.fetch(SQL["drop_planned_runs"], schedule_id)
            next_fire_at = plan.next_fire_at if plan else min((row["due_at"] for row in dropped), default=None)
            updated = await connection.fetchrow(
                SQL["update_schedule"],
                schedule_id,
                values.name,
                values.enabled,
                values.trigger,
                values.push,
                next_fire_at,
                plan.final_fire_at if plan else None,
            )
            if plan is not None:
                await self._record_skipped(connection, schedule_id, plan)
            if next_fire_at is not None and values.enabled and self._wakes_engines(next_fire_at, now):
                await _notify_next_fire(connection, next_fire_at)
            if not values.enabled:
                await connection.execute(SQL["cancel_open_runs"], schedule_id, now)
        if not values.enabled:
            await self._wait_for_sends(schedule_id, in_flight_wait)
        return _schedule(updated)

    @_translated
    async def delete_schedule(
        self, app_key: str, schedule_id: types.ScheduleId, now: dt.datetime, in_flight_wait: float = 0.0
    ) -> bool:
        """Soft-delete a valid task and cancel its queued retries; returns once no send of it is in flight
        (up to `in_flight_wait` seconds), so nothing fires after the call returned. False: no such task."""
        async with self._acquire() as connection, connection.transaction():
            if await connection.fetchval(SQL["delete_schedule"], schedule_id, app_key, now) is None:
                return False
            await connection.execute(SQL["drop_planned_runs"], schedule_id)
            await connection.execute(SQL["cancel_open_runs"], schedule_id, now)
        await self._wait_for_sends(schedule_id, in_flight_wait)
        return True

    async def _wait_for_sends(self, schedule_id: types.ScheduleId, limit: float) -> None:
        """Poll until no sender holds a run of this task; a crashed sender's lease bounds it, so does `limit`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        pause = 0.002
        async with self._acquire() as connection:
            while loop.time() < deadline:
                now = dt.datetime.now(dt.timezone.utc)
                if await connection.fetchval(SQL["count_sends_in_flight"], schedule_id, now) == 0:
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)

    @_translated
    async def sent_msg_ids(self, app_key: str, schedule_id: types.ScheduleId) -> list[str] | None:
        """msg_ids of every push the task sent, oldest first; None when the task is unknown or deleted."""
        async with self._acquire() as connection:
            if await connection.fetchval(SQL["schedule_exists"], schedule_id, app_key) is None:
                return None
            return [row["msg_id"] for row in await connection.fetch(SQL["sent_msg_ids"], schedule_id)]

    # -- engine -----------------------------------------------------------------------------------------

    @_translated
    async def plan_due_single_fires(
        self,
        now: dt.datetime,
        until: dt.datetime,
        limit: int,
        lease_until: dt.datetime,
        reservation: dt.timedelta,
        grace: dt.timedelta,
    ) -> tuple[int, int, list[types.RunToSend]]:
        """Plan step for single zone_type 1 tasks, the common case, in one statement (plan_due does the rest).

        Returns how many tasks were planned, how many of their fires were missed, and the runs to send, as
        plan_due does."""
        async with self._acquire() as connection, connection.transaction():
            await connection.execute(SQL["prefer_ordered_index_scans"])
            rows = await connection.fetch(
                SQL["plan_due_single_fires"], until, limit, now, lease_until, reservation, grace
            )
        runs = [
            _run_to_send_from_row(row, is_wave=False, still_wanted=True)
            for row in rows
            if row["inserted"] and row["state"] != "missed"
        ]
        missed = sum(1 for row in rows if row["inserted"] and row["state"] == "missed")
        return len(rows), missed, runs

    @_translated
    async def plan_due(
        self,
        now: dt.datetime,
        until: dt.datetime,
        limit: int,
        lease_until: dt.datetime,
        reservation: dt.timedelta,
        plan: Callable[[types.DueSchedule], dispatch.DuePlan],
    ) -> tuple[int, list[types.RunToSend]]:
        """Plan step, in one short transaction: lock the tasks due by `until` (SKIP LOCKED), insert their
        runs, advance them.

        Returns how many tasks were planned and the runs to send: those due by `now` already leased to the
        caller ('sending'), the later ones 'planned' (reserved to the caller until due + `reservation`; it
        claims them with claim_planned when they are due).
        """
        async with self._acquire() as connection, connection.transaction():
            await connection.execute(SQL["prefer_ordered_index_scans"])
            rows = await connection.fetch(SQL["lock_due_schedules"], until, limit)
            if not rows:
                return 0, []
            due = {row["id"]: _due_schedule(row) for row in rows}
            run_columns: tuple[list[Any], ...] = ([], [], [], [])
            advanced: tuple[list[Any], list[Any]] = ([], [])
            for schedule in due.values():
                planned = plan(schedule)
                # Due now: leased for sending; due later: planned ahead; too late: recorded as missed.
                states = [(fire, "sending" if fire.due_at <= now else "planned") for fire in planned.send]
                states += [(fire, "missed") for fire in planned.missed]
                for fire, state in states:
                    for column, value in zip(
                        run_columns, (schedule.schedule_id, fire.due_at, fire.utc_offset_minutes, state)
                    ):
                        column.append(value)
                advanced[0].append(schedule.schedule_id)
                advanced[1].append(planned.next_fire_at)
            inserted = await connection.fetch(
                SQL["insert_planned_runs"], *run_columns, now, lease_until, reservation
            )
            await connection.execute(SQL["advance_schedules"], *advanced, now)
        runs = []
        for row in inserted:
            if row["state"] not in ("sending", "planned"):
                continue
            schedule = due[row["schedule_id"]]
            runs.append(
                _run_to_send(
                    row,
                    schedule.app_key,
                    schedule.push,
                    schedule.push_key,
                    schedule.push_secret_encrypted,
                    is_wave=dispatch.zone_type(schedule.trigger) == 2,
                    still_wanted=True,
                )
            )
        return len(due), runs

    @_translated
    async def claim_planned(
        self, run_ids: list[uuid.UUID], now: dt.datetime, lease_until: dt.datetime
    ) -> set[uuid.UUID]:
        """Lease planned runs for sending; returns the ids still planned (not dropped or taken over)."""
        async with self._acquire() as connection:
            rows = await connection.fetch(SQL["claim_planned_runs"], run_ids, lease_until, now)
        return {row["id"] for row in rows}

    @_translated
    async def release_planned(self, run_ids: list[uuid.UUID]) -> None:
        """Shutdown: planned runs any engine may take over at their due instant."""
        if run_ids:
            async with self._acquire() as connection:
                await connection.execute(SQL["release_planned_runs"], run_ids)

    @_translated
    async def claim_retries(self, now: dt.datetime, limit: int, lease_until: dt.datetime) -> list[types.RunToSend]:
        """Lease due retries and runs whose sender's lease ran out."""
        async with self._acquire() as connection:
            rows = await connection.fetch(SQL["claim_retry_runs"], now, limit, lease_until)
        return [_run_to_send_from_row(row, is_wave=row["is_wave"], still_wanted=row["still_wanted"]) for row in rows]

    @_translated
    async def record_results(self, results: list[types.RunResult]) -> None:
        """Write a batch of send outcomes in one statement."""
        if not results:
            return
        async with self._acquire() as connection:
            await connection.execute(
                SQL["record_run_results"],
                [result.run_id for result in results],
                [result.state for result in results],
                [result.msg_id for result in results],
                [result.error for result in results],
                [result.next_attempt_at for result in results],
                [result.finished_at for result in results],
                [result.payload for result in results],
            )

    @_translated
    async def release_runs(self, run_ids: list[uuid.UUID], now: dt.datetime) -> None:
        """Give leased runs back for immediate pickup (graceful shutdown)."""
        if run_ids:
            async with self._acquire() as connection:
                await connection.execute(SQL["release_runs"], run_ids, now)

    @_translated
    async def next_wake(self, plan_ahead: dt.timedelta) -> dt.datetime | None:
        """When the engine has work next: `plan_ahead` before the next fire to plan, or a retry or takeover."""
        async with self._acquire() as connection:
            return await connection.fetchval(SQL["next_wake"], plan_ahead)

    @_translated
    async def expire_lapsed(self, now: dt.datetime) -> int:
        async with self._acquire() as connection:
            status = await connection.execute(SQL["expire_lapsed_schedules"], now)
        return int(status.split()[-1])

    async def listen(self, callback: Callable[[str], None]) -> asyncpg.Connection:
        """A dedicated connection LISTENing for schedule changes; `callback(payload)` on each notification."""
        connection = await asyncpg.connect(**self._connect_args)
        await connection.add_listener(
            NOTIFY_CHANNEL, lambda _connection, _pid, _channel, payload: callback(payload)
        )
        return connection

    # -- operations -------------------------------------------------------------------------------------

    @_translated
    async def schema_is_current(self, timeout: float) -> bool:
        """For /readyz: the database answers within `timeout` seconds and every migration file is applied."""
        async with self._pool.acquire(timeout=timeout) as connection:
            return await asyncio.wait_for(migrations.is_current(connection), timeout)

    @_translated
    async def due_backlog(self, now: dt.datetime, timeout: float) -> types.DueBacklog:
        """For /metrics: work due at `now` and not done, counted within `timeout` seconds."""
        async with self._pool.acquire(timeout=timeout) as connection:
            row = await connection.fetchrow(SQL["count_due_backlog"], now, timeout=timeout)
        return types.DueBacklog(row["fires"], row["retries"], row["expired_leases"])

    def pool_usage(self) -> types.PoolUsage:
        return types.PoolUsage(self._pool.get_size(), self._pool.get_idle_size(), self._pool.get_max_size())
