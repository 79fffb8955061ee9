"""ScheduleStore: apps and schedules, for the API and the CLI. Rows become domain objects here."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import uuid
from collections.abc import Callable

import asyncpg

from service.domain import errors, timing, types
from service.store.database import Pool, translated
from service.store.queries import SQL


def _app(row: asyncpg.Record) -> types.App:
    return types.App(
        app_key=types.AppKey(row["app_key"]),
        name=row["name"],
        time_zone=row["time_zone"],
        max_schedules=row["max_schedules"],
        created_at=row["created_at"],
    )


def _app_record(row: asyncpg.Record) -> types.AppRecord:
    return types.AppRecord(_app(row), row["state"], row["has_push_credentials"])


def _instant(value: dt.datetime) -> dt.datetime:
    """asyncpg reads 'infinity' as a naive datetime.max; the domain's NO_END is its aware twin."""
    return timing.NO_END if value.tzinfo is None and value == dt.datetime.max else value


def _schedule(row: asyncpg.Record) -> types.Schedule:
    return types.Schedule(
        schedule_id=types.ScheduleId(row["id"]),
        app_key=types.AppKey(row["app_key"]),
        name=row["name"],
        enabled=row["enabled"],
        trigger=row["trigger"],
        push=row["push"],
        created_at=row["created_at"],
        final_fire_at=_instant(row["final_fire_at"]),
        time_zone=row["time_zone"],
        description=row["description"],
        max_failures=row["max_failures"],
        consecutive_failures=row["consecutive_failures"],
        disabled_reason=row["disabled_reason"],
        next_run_at=row["next_run_at"],
        last_run=None if row["last_run_due_at"] is None else types.LastRun(
            row["last_run_due_at"], row["last_run_state"], row["last_run_msg_id"]
        ),
        params=row["params"] or {},
        webhook_created_at=row.get("webhook_created_at"),
    )


# The page query of each order (queries.sql), so no statement is built from the request.
_LIST_QUERIES: dict[tuple[types.SortKey, bool], str] = {
    (key, descending): SQL[f"list_schedules_by_{key}" + ("_desc" if descending else "")]
    for key in ("created", "name", "next_run", "last_run")
    for descending in (False, True)
}


def _run(row: asyncpg.Record, zone_type: int) -> types.Run:
    return types.Run(
        run_id=row["id"],
        due_at=row["due_at"],
        wave=timing.format_offset(row["utc_offset_minutes"]) if zone_type == 2 else None,
        state=row["state"],
        attempts=row["attempts"],
        dispatched_at=row["dispatched_at"],
        msg_id=row["msg_id"],
        error=row["error"],
        source=row["source"],
        triggered_run_id=row["trigger_id"],
        param_set=row["trigger_item"],
    )


class ScheduleStore:
    """Every read and write of apps and schedules, each short and in its own transaction where it writes."""

    def __init__(self, pool: Pool, *, wake_horizon: dt.timedelta | None = None) -> None:
        self._pool = pool
        # How far ahead a change must NOTIFY the engines (sql/0005 wakes_engines); None: every change does.
        self._wake_horizon = wake_horizon

    # -- apps -------------------------------------------------------------------------------------------

    @translated
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
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                SQL["insert_app"], app_key, name, secret_sha256, time_zone, max_schedules, push_key,
                push_secret_encrypted,
            )
        return _app(row)

    @translated
    async def create_first_app(
        self, app_key: str, name: str, secret_sha256: bytes, time_zone: str, max_schedules: int
    ) -> types.App | None:
        """Create an app if the database has none yet (the demo app); None when it has. Replicas starting
        together on one empty database create one app between them (an advisory lock serializes them)."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(SQL["lock_demo_app_creation"])
            if await connection.fetchval(SQL["count_apps"]) > 0:
                return None
            row = await connection.fetchrow(
                SQL["insert_app"], app_key, name, secret_sha256, time_zone, max_schedules, None, None
            )
        return _app(row)

    @translated
    async def list_apps(self) -> list[types.AppRecord]:
        """Every app, in every state, oldest first."""
        async with self._pool.acquire() as connection:
            return [_app_record(row) for row in await connection.fetch(SQL["list_apps"])]

    @translated
    async def get_app_record(self, app_key: str) -> types.AppRecord | None:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(SQL["get_app_record"], app_key)
        return None if row is None else _app_record(row)

    @translated
    async def set_app_state(
        self, app_key: str, state: types.AppState, now: dt.datetime, in_flight_wait: float = 0.0
    ) -> str | None:
        """Disable, enable or delete an app (sql/0006 set_app_state); its state before, None for no such app.
        ValueError when a deleted app would come back. A disable or delete returns once no send of the app is
        in flight (up to `in_flight_wait` seconds), so nothing goes out for it after the command returned."""
        try:
            async with self._pool.acquire() as connection:
                before: str | None = await connection.fetchval(SQL["set_app_state"], app_key, state, now)
        except asyncpg.CheckViolationError as exc:
            raise ValueError(str(exc)) from None
        if before is not None and state != "active":
            await self._wait_for_sends(SQL["count_app_sends_in_flight"], app_key, in_flight_wait)
        return before

    @translated
    async def update_app(
        self,
        app_key: str,
        *,
        time_zone: str | None = None,
        max_schedules: int | None = None,
        secret_sha256: bytes | None = None,
        push_key: str | None = None,
        push_secret_encrypted: bytes | None = None,
    ) -> bool:
        """Change what is given (sql/0006 update_app); False: no such app, or it is deleted."""
        async with self._pool.acquire() as connection:
            updated: bool = await connection.fetchval(
                SQL["update_app"], app_key, time_zone, max_schedules, secret_sha256, push_key,
                push_secret_encrypted,
            )
        return updated

    @translated
    async def get_app_with_secret_digest(self, app_key: str) -> tuple[types.App, bytes] | None:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(SQL["get_app"], app_key)
        return None if row is None else (_app(row), bytes(row["secret_sha256"]))

    @translated
    async def push_secrets_sample(self) -> list[tuple[str, bytes]]:
        """A few apps' encrypted push secrets, for the start-up check of PUSH_CREDENTIALS_KEY."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(SQL["push_secrets_sample"])
        return [(row["app_key"], bytes(row["push_secret_encrypted"])) for row in rows]

    # -- schedules --------------------------------------------------------------------------------------

    @translated
    async def create_schedule(
        self, app_key: str, values: types.ScheduleValues, cid: str | None, now: dt.datetime
    ) -> tuple[types.ScheduleId, str]:
        """Insert a task unless the app reached its cap; a cid already used returns the first task instead.

        One round trip: the SQL function create_schedule (sql/0006) locks the app, checks cid and cap, inserts
        and notifies, in one implicit transaction."""
        plan = values.plan
        assert plan is not None
        async with self._pool.acquire() as connection:
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
                self._wake_horizon,
                values.kind,
                values.zone_type,
                values.time_zone,
                values.description,
                values.max_failures,
                values.params,
            )
        if row["outcome"] == "full":
            raise errors.InvalidParameter(
                f"schedule: the app already has {row['valid']} valid tasks, its cap is {row['cap']}"
            )
        if row["outcome"] == "no_app":
            raise errors.AuthenticationFailed()
        return types.ScheduleId(row["id"]), row["name"]

    @translated
    async def list_schedules(
        self, app_key: str, now: dt.datetime, limit: int, offset: int, query: types.ListQuery | None = None
    ) -> tuple[int, list[types.Schedule]]:
        """One page of the app's valid tasks that pass the filters, in the order asked (oldest created first
        by default), and their total, read in one snapshot."""
        query = query or types.ListQuery()
        filters = (app_key, now, query.name_from, query.name_below, query.name, query.enabled, query.kind)
        async with self._pool.acquire() as connection, connection.transaction(
            isolation="repeatable_read", readonly=True
        ):
            total = await connection.fetchval(SQL["count_listed_schedules"], *filters)
            rows = await connection.fetch(_LIST_QUERIES[query.sort, query.descending], *filters, limit, offset)
        return total, [_schedule(row) for row in rows]

    @translated
    async def get_schedule(
        self, app_key: str, schedule_id: types.ScheduleId, now: dt.datetime
    ) -> types.Schedule | None:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(SQL["get_valid_schedule"], schedule_id, app_key, now)
        return None if row is None else _schedule(row)

    @translated
    async def update_schedule(
        self,
        app_key: str,
        schedule_id: types.ScheduleId,
        now: dt.datetime,
        apply: Callable[[types.Schedule], types.ScheduleValues],
        in_flight_wait: float = 0.0,
    ) -> types.Schedule:
        """Lock the task, let `apply` (the domain's rules, service.domain.schedules) compute its new values
        from the current ones, and write them (sql/0006 update_schedule), in one transaction.

        Unknown, other app's or deleted: ScheduleNotFound. No longer valid: InvalidParameter (the contract's
        28100). Disabling cancels queued retries and returns only once no send of the task is in flight (up
        to `in_flight_wait` seconds), so nothing fires after the call returned.
        """
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(SQL["lock_schedule"], schedule_id, app_key, now)
            if row is None:
                raise errors.ScheduleNotFound()
            if not row["valid"]:
                raise errors.InvalidParameter("schedule: has expired and can no longer be updated")
            values = apply(_schedule(row))
            plan = values.plan
            skipped = plan.skipped if plan else ()
            updated = await connection.fetchrow(
                SQL["update_schedule"],
                schedule_id,
                values.name,
                values.enabled,
                values.trigger,
                values.push,
                plan.next_fire_at if plan else None,
                plan.final_fire_at if plan else None,
                values.kind,
                values.zone_type,
                [fire.due_at for fire in skipped],
                [fire.utc_offset_minutes for fire in skipped],
                now,
                self._wake_horizon,
                values.time_zone,
                values.description,
                values.max_failures,
                values.enabled_set,
                values.params,
            )
        if not values.enabled:
            await self._wait_for_sends(SQL["count_sends_in_flight"], schedule_id, in_flight_wait)
        return _schedule(updated)

    @translated
    async def delete_schedule(
        self, app_key: str, schedule_id: types.ScheduleId, now: dt.datetime, in_flight_wait: float = 0.0
    ) -> bool:
        """Soft-delete a valid task and cancel its queued retries (sql/0005 delete_schedule); returns once no
        send of it is in flight (up to `in_flight_wait` seconds), so nothing fires after the call returned.
        False: no such task."""
        async with self._pool.acquire() as connection:
            deleted: bool = await connection.fetchval(SQL["delete_schedule"], schedule_id, app_key, now)
        if deleted:
            await self._wait_for_sends(SQL["count_sends_in_flight"], schedule_id, in_flight_wait)
        return deleted

    async def _wait_for_sends(self, count_query: str, owner: object, limit: float) -> None:
        """Poll until no sender holds a run of this task (or app: `count_query` counts them); a crashed sender's
        lease bounds it, so does `limit`.

        Each poll takes a connection only for its one query: a DELETE waiting on a stalled push API holds none
        meanwhile, so a few of them cannot exhaust the pool."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        pause = 0.002
        while loop.time() < deadline:
            async with self._pool.acquire() as connection:
                if await connection.fetchval(count_query, owner) == 0:
                    return
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.05)

    @translated
    async def sent_msg_ids(self, app_key: str, schedule_id: types.ScheduleId) -> list[str] | None:
        """msg_ids of every push the task sent, oldest first; None when the task is unknown or deleted."""
        async with self._pool.acquire() as connection:
            if await connection.fetchval(SQL["schedule_exists"], schedule_id, app_key) is None:
                return None
            return [row["msg_id"] for row in await connection.fetch(SQL["sent_msg_ids"], schedule_id)]

    @translated
    async def schedule_runs(
        self, app_key: str, schedule_id: types.ScheduleId, limit: int, offset: int
    ) -> tuple[int, list[types.Run]] | None:
        """One page of a task's runs, newest due first, and their total, read in one snapshot; None when the
        task is unknown, another app's or deleted (an expired task answers, as msg-ids does)."""
        async with self._pool.acquire() as connection, connection.transaction(
            isolation="repeatable_read", readonly=True
        ):
            zone_type = await connection.fetchval(SQL["schedule_history_zone_type"], schedule_id, app_key)
            if zone_type is None:
                return None
            total = await connection.fetchval(SQL["count_schedule_runs"], schedule_id)
            rows = await connection.fetch(SQL["schedule_runs_page"], schedule_id, limit, offset)
        return total, [_run(row, zone_type) for row in rows]

    # -- triggered runs and webhooks (issue 13) ---------------------------------------------------------

    @translated
    async def trigger_run(
        self,
        schedule_id: types.ScheduleId,
        source: types.TriggerSource,
        param_sets: list[dict[str, str]],
        idempotency_key: str | None,
        rate_per_minute: int | None,
    ) -> types.Triggered:
        """Queue a run of one push per parameter set (sql/0010 trigger_run): committed when this returns, and
        the engines woken. The same `idempotency_key` within 24 h returns the first run instead; past
        `rate_per_minute` calls of this source in the last minute, none is made ('limited')."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                SQL["trigger_run"], uuid.uuid4(), schedule_id, source, idempotency_key,
                [values or None for values in param_sets], rate_per_minute,
            )
        return types.Triggered(row["outcome"], row["run_id"], row["retry_after"])

    @translated
    async def run_progress(
        self, app_key: str, schedule_id: types.ScheduleId, run_id: uuid.UUID
    ) -> types.RunProgress | None:
        """Where a run of the app's task stands (a triggered run, or one run of its history); None: no such
        run of that task, or the task is deleted or another app's."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(SQL["run_progress"], run_id, schedule_id, app_key)
        if row is None or row["total"] == 0:
            return None
        return types.RunProgress(
            run_id=run_id,
            schedule_id=schedule_id,
            source=row["source"] or "schedule",
            total=row["total"],
            sent=row["sent"],
            failed=row["failed"],
            next_attempt_at=row["next_attempt_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            msg_ids=list(row["msg_ids"]),
            errors=list(zip(row["error_sets"], row["errors"], strict=True)),
        )

    @translated
    async def set_webhook(
        self, app_key: str, schedule_id: types.ScheduleId, digest: bytes, now: dt.datetime
    ) -> dt.datetime | None:
        """Give a valid task a webhook whose token has `digest`, replacing any; when it was made, or None for
        no such valid task."""
        async with self._pool.acquire() as connection:
            made: dt.datetime | None = await connection.fetchval(
                SQL["set_webhook"], schedule_id, app_key, digest, now
            )
        return made

    @translated
    async def clear_webhook(self, app_key: str, schedule_id: types.ScheduleId, now: dt.datetime) -> bool:
        """Revoke a valid task's webhook; False: no such valid task."""
        async with self._pool.acquire() as connection:
            return await connection.fetchval(SQL["clear_webhook"], schedule_id, app_key, now) is not None

    @translated
    async def find_webhook(self, digest: bytes, now: dt.datetime) -> types.HookTarget | None:
        """The task a webhook token's digest opens, or None (unknown, revoked or deleted). The stored digest is
        compared again in constant time: the index lookup is what finds it, this is what accepts it."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(SQL["find_webhook"], digest, now)
        if row is None or not hmac.compare_digest(bytes(row["webhook_digest"]), digest):
            return None
        return types.HookTarget(
            schedule_id=types.ScheduleId(row["id"]),
            app_key=types.AppKey(row["app_key"]),
            enabled=row["enabled"],
            valid=row["valid"],
            app_active=row["app_active"],
            push=row["push"],
            params=row["params"] or {},
        )
