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

from service.domain import errors, types
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


async def _init_connection(connection: asyncpg.Connection) -> None:
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

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0
    ) -> Store:
        """Open a pool; `timeout` bounds connecting, acquiring and every statement."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                command_timeout=timeout,
                init=_init_connection,
            )
        except _UNAVAILABLE as exc:
            raise errors.DatabaseUnavailable() from exc
        assert pool is not None
        return cls(pool, acquire_timeout=timeout)

    async def close(self) -> None:
        await self._pool.close()

    def _acquire(self) -> Any:
        return self._pool.acquire(timeout=self._acquire_timeout)

    # -- apps -------------------------------------------------------------------------------------------

    @_translated
    async def create_app(
        self, app_key: str, name: str, secret_sha256: bytes, time_zone: str, max_schedules: int
    ) -> types.App:
        async with self._acquire() as connection:
            row = await connection.fetchrow(
                SQL["insert_app"], app_key, name, secret_sha256, time_zone, max_schedules
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
        """Insert a task unless the app reached its cap; a cid already used returns the first task instead."""
        assert values.plan is not None
        async with self._acquire() as connection, connection.transaction():
            cap = await connection.fetchval(SQL["lock_app"], app_key)
            if cid is not None:
                existing = await connection.fetchrow(SQL["find_schedule_by_cid"], app_key, cid)
                if existing is not None:
                    return types.ScheduleId(existing["id"]), existing["name"]
            valid = await connection.fetchval(SQL["count_valid_schedules"], app_key, now)
            if valid >= cap:
                raise errors.InvalidParameter(
                    f"schedule: the app already has {valid} valid tasks, its cap is {cap}"
                )
            schedule_id = types.ScheduleId(uuid.uuid4())
            await connection.execute(
                SQL["insert_schedule"],
                schedule_id,
                app_key,
                values.name,
                values.enabled,
                values.trigger,
                values.push,
                cid,
                values.plan.next_fire_at,
                values.plan.final_fire_at,
            )
            await self._record_skipped(connection, schedule_id, values.plan)
        return schedule_id, values.name

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
    ) -> types.Schedule:
        """Lock the task, let `apply` compute its new values from the current ones, and write them.

        Unknown, other app's or deleted: ScheduleNotFound. Expired: InvalidParameter (the contract's 28100).
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
            updated = await connection.fetchrow(
                SQL["update_schedule"],
                schedule_id,
                values.name,
                values.enabled,
                values.trigger,
                values.push,
                plan.next_fire_at if plan else None,
                plan.final_fire_at if plan else None,
            )
            if plan is not None:
                await self._record_skipped(connection, schedule_id, plan)
        return _schedule(updated)

    @_translated
    async def delete_schedule(
        self, app_key: str, schedule_id: types.ScheduleId, now: dt.datetime
    ) -> bool:
        async with self._acquire() as connection:
            return await connection.fetchval(SQL["delete_schedule"], schedule_id, app_key, now) is not None

    @_translated
    async def sent_msg_ids(self, app_key: str, schedule_id: types.ScheduleId) -> list[str] | None:
        """msg_ids of every push the task sent, oldest first; None when the task is unknown or deleted."""
        async with self._acquire() as connection:
            if await connection.fetchval(SQL["schedule_exists"], schedule_id, app_key) is None:
                return None
            return [row["msg_id"] for row in await connection.fetch(SQL["sent_msg_ids"], schedule_id)]

    @_translated
    async def ping(self) -> None:
        async with self._acquire() as connection:
            await connection.fetchval("SELECT 1")
