"""The engine's and the probes' scans of stored tasks are bounded by their index, however many tasks are stored.

Found at 1M stored tasks (bench.scale): compared with a volatile clock_timestamp() or a CTE's row, "due by now"
was a filter, not an index condition, and each plan step (or scrape) walked every stored task when fewer than a
batch were due. These tests look at the plans' row counts, not at times, so they hold on any machine.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg

from service import admin
from service.store.queries import SQL
from service.store.stores import Stores
from tests.bulk import bulk_schedules

STORED = 20_000


def _rows_read(node: dict[str, Any]) -> int:
    """Rows every scan of the plan produced plus those its filters removed."""
    own = 0
    if "Scan" in node["Node Type"]:
        own = int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
    return own + sum(_rows_read(child) for child in node.get("Plans", []))


async def _rows_read_by(connection: asyncpg.Connection, query: str, *args: Any) -> int:
    async with connection.transaction():
        await connection.execute(SQL["prefer_ordered_index_scans"])  # as the engine runs its plan step
        [row] = await connection.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
    return _rows_read(json.loads(row[0])[0]["Plan"])


async def test_nothing_due_reads_nothing_however_many_tasks_are_stored(database_url: str) -> None:
    stores = await Stores.open(database_url, api_pool_size=1)
    try:
        app_key = (await admin.register_app(stores.schedules, "plans", "UTC", STORED)).app.app_key
    finally:
        await stores.close()
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    await bulk_schedules(database_url, app_key, tomorrow, STORED)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("UPDATE schedules SET kind = 'periodical'")  # the general plan path's tasks
        await connection.execute("ANALYZE schedules")
        assert await _rows_read_by(connection, SQL["lock_due_schedules"], dt.timedelta(seconds=2), 500) <= 2
        assert await _rows_read_by(connection, SQL["count_due_backlog"], 10_000) <= 3
    finally:
        await connection.close()


async def test_page_one_of_every_sort_reads_one_page_however_many_tasks_the_app_has(database_url: str) -> None:
    """The sorted lists (issue 12): each order reads its own index from the app's first entry, so page 1 reads
    about a page of rows whether the app holds a hundred tasks or tens of thousands."""
    stores = await Stores.open(database_url, api_pool_size=1)
    try:
        app_key = (await admin.register_app(stores.schedules, "plans", "UTC", STORED)).app.app_key
    finally:
        await stores.close()
    await bulk_schedules(database_url, app_key, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1), STORED)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("ANALYZE schedules")
        now = dt.datetime.now(dt.timezone.utc)
        unfiltered = (app_key, now, "", "\U0010ffff", None, None, None)
        for key in ("created", "name", "next_run", "last_run"):
            for suffix in ("", "_desc"):
                query = SQL[f"list_schedules_by_{key}{suffix}"]
                async with connection.transaction():
                    [row] = await connection.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *unfiltered, 50, 0)
                read = _rows_read(json.loads(row[0])[0]["Plan"])
                assert read <= 60, f"sort {key}{suffix}: page 1 read {read} rows of {STORED}"
    finally:
        await connection.close()


async def test_a_task_s_history_page_and_a_run_s_status_read_their_own_rows_only(database_url: str) -> None:
    """Issue 13: the history's order now runs through a triggered run's pushes (sql/0010's unique key read
    backwards: no sort of the task's runs), and a run's status reads its own pushes, not the task's history."""
    stores = await Stores.open(database_url, api_pool_size=1)
    try:
        app_key = (await admin.register_app(stores.schedules, "plans", "UTC", 10)).app.app_key
    finally:
        await stores.close()
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    await bulk_schedules(database_url, app_key, tomorrow, 1)
    connection = await asyncpg.connect(database_url)
    try:
        schedule_id = await connection.fetchval("SELECT id FROM schedules")
        # 20,000 scheduled runs (a year of a cron task firing every half hour), then a run of 1,000 pushes.
        await connection.execute(
            """INSERT INTO runs (id, schedule_id, due_at, state)
               SELECT gen_random_uuid(), $1, now() - make_interval(mins => n * 30), 'sent'
               FROM generate_series(1, 20000) AS n""",
            schedule_id,
        )
        [row] = await connection.fetch(
            SQL["trigger_run"], uuid.uuid4(), schedule_id, "run_now", None, [None] * 1000, None
        )
        await connection.execute("ANALYZE runs")
        assert await _rows_read_by(connection, SQL["schedule_runs_page"], schedule_id, 50, 0) <= 100
        # The run's 1,000 pushes, counted twice when read by a bitmap scan (its index and heap nodes); never the
        # task's 20,000 other runs.
        assert await _rows_read_by(connection, SQL["run_progress"], row["run_id"], schedule_id, app_key) <= 2_002
        one_run = await connection.fetchval("SELECT id FROM runs WHERE trigger_id IS NULL LIMIT 1")
        assert await _rows_read_by(connection, SQL["run_progress"], one_run, schedule_id, app_key) <= 3
    finally:
        await connection.close()
