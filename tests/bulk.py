"""Bulk set-up shared by the engine tests and the benchmarks: many tasks due at one instant, inserted in
one statement (the API path is tested on its own; setting a burst up through it would outlast the burst)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from service.store import database


async def bulk_schedules(dsn: str, app_key: str, due: dt.datetime, count: int, *, tagged: bool = False) -> None:
    """`tagged`: each push carries its task's id as custom_args.task, so a receiver can tell the tasks apart
    whatever idempotency key each send has (the stand-in reports it)."""
    push = {"to": "all", "body": {"platform": "all", "notification": {"alert": "burst"}, "options": {}}}
    trigger = {"single": {"time": due.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), "zone_type": 1}}
    tag = "jsonb_build_object('custom_args', jsonb_build_object('task', id::text))" if tagged else "'{}'::jsonb"
    connection = await asyncpg.connect(dsn)
    try:
        await database.register_json_codecs(connection)
        await connection.execute(
            "INSERT INTO schedules (id, app_key, name, enabled, trigger, push, next_fire_at, final_fire_at, kind, zone_type, "
            "time_zone) "
            f"SELECT id, $1, 'burst_' || n, true, $2, $3::jsonb || {tag}, $4, $4, 'single', 1, 'UTC' "
            "FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, $5) AS n) AS task",
            app_key, trigger, push, due, count,
        )
        # Wake the engines as the API's creates would.
        await connection.execute("SELECT pg_notify($1, $2)", database.NOTIFY_CHANNEL, str(due.timestamp()))
    finally:
        await connection.close()
