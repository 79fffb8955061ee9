"""Data retention (RETENTION_DAYS): what the purge takes and what it keeps, its batch bounds, that it never waits
on a lock, the engine's sweep, and msg-ids of an expired task readable until its retention passes."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import pathlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from service import admin
from service.app import engine_config
from service.engine.retention import Retention
from service.settings import Settings
from service.store.runqueue import RunQueue
from service.store.stores import Stores
from tests.integration.conftest import Service, engine_settings, fetch, start_service
from tests.standin import StandIn
from tests.waiting import eventually

RETENTION = dt.timedelta(days=90)
FINAL_STATES = ("sent", "failed", "missed", "skipped", "cancelled")

_instants = itertools.count(1)


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    opened = await Stores.open(database_url, api_pool_size=2, engine_pool_size=4)
    yield opened
    await opened.close()


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    opened = await asyncpg.connect(database_url)
    yield opened
    await opened.close()


def _queue(stores: Stores) -> RunQueue:
    assert stores.runs is not None
    return stores.runs


async def _app(stores: Stores) -> str:
    return (await admin.register_app(stores.schedules, "retention", "UTC", 100_000)).app.app_key


async def _task(
    connection: asyncpg.Connection, app_key: str, *, state: str = "active", updated_days: float = 300,
    final_days: float = -30, stopped_reason: str | None = None,
) -> uuid.UUID:
    """A task changed `updated_days` ago whose last fire is `final_days` ago (negative: ahead; -inf: none)."""
    task_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO schedules (id, app_key, name, enabled, trigger, push, next_fire_at, final_fire_at, kind, "
        "zone_type, time_zone, state, created_at, updated_at, stopped_reason) "
        "VALUES ($1, $2, 'retention', true, '{\"single\": {}}', '{\"to\": \"all\"}', NULL, "
        "CASE WHEN $3 = '-infinity'::float8 THEN 'infinity' ELSE now() - $3 * interval '1 day' END, 'single', 1, "
        "'UTC', $4, now() - interval '400 days', now() - $5 * interval '1 day', $6)",
        task_id, app_key, final_days, state, updated_days, stopped_reason,
    )
    return task_id


async def _run(
    connection: asyncpg.Connection, schedule_id: uuid.UUID, state: str, *, created_days: float,
    finished_days: float | None = None, due_days: float | None = None,
) -> uuid.UUID:
    """A run created `created_days` ago, due `due_days` ago (default: when created), finished `finished_days`
    ago (default: when due, for the final states that record it; never for skipped and open runs)."""
    if finished_days is None and state in ("sent", "failed", "missed", "cancelled"):
        finished_days = created_days if due_days is None else due_days
    run_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO runs (id, schedule_id, due_at, state, created_at, finished_at, sent_at, msg_id, lease_until) "
        "VALUES ($1::uuid, $2, now() - $3 * interval '1 day' - $7 * interval '1 ms', $4::text, now() - $5 * interval '1 day', "
        "now() - $6 * interval '1 day', CASE WHEN $4 = 'sent' THEN now() - $6 * interval '1 day' END, "
        "CASE WHEN $4 = 'sent' THEN 'msg-' || $1::uuid::text END, "
        "CASE WHEN $4 IN ('planned', 'sending') THEN now() + interval '1 hour' END)",
        run_id, schedule_id, created_days if due_days is None else due_days, state, created_days, finished_days,
        next(_instants),
    )
    return run_id


async def _ids(connection: asyncpg.Connection, table: str) -> set[uuid.UUID]:
    return {row["id"] for row in await connection.fetch(f"SELECT id FROM {table}")}


async def test_purge_takes_final_runs_created_and_ended_before_the_retention_and_nothing_else(
    stores: Stores, connection: asyncpg.Connection
) -> None:
    task = await _task(connection, await _app(stores))
    purged = {await _run(connection, task, state, created_days=100) for state in FINAL_STATES}
    kept = {await _run(connection, task, state, created_days=100) for state in ("planned", "pending", "sending")}
    kept |= {
        await _run(connection, task, "sent", created_days=100, finished_days=80),  # retried for days: ended late
        await _run(connection, task, "skipped", created_days=80, due_days=100),  # a wave past at creation
        await _run(connection, task, "sent", created_days=10),
        await _run(connection, task, "failed", created_days=89.9),
    }
    assert await _queue(stores).purge_old_runs(RETENTION, 1000) == len(purged)
    assert await _ids(connection, "runs") == kept
    assert await _queue(stores).purge_old_runs(RETENTION, 1000) == 0
    assert await _ids(connection, "schedules") == {task}


async def test_purge_takes_tasks_deleted_or_expired_before_the_retention_with_their_runs(
    stores: Stores, connection: asyncpg.Connection
) -> None:
    app_key = await _app(stores)
    deleted_long_ago = await _task(connection, app_key, state="deleted", updated_days=100)
    expired_long_ago = await _task(connection, app_key, state="expired", updated_days=100, final_days=100)
    gone_runs = {
        await _run(connection, deleted_long_ago, "sent", created_days=150),
        await _run(connection, deleted_long_ago, "cancelled", created_days=100),
        await _run(connection, deleted_long_ago, "skipped", created_days=50),  # its runs go whatever their age
        await _run(connection, expired_long_ago, "sent", created_days=100.5),
    }
    kept_tasks = {
        await _task(connection, app_key, state="deleted", updated_days=10),
        # Expired before updated_at marked expiries: it counts from its last fire.
        await _task(connection, app_key, state="expired", updated_days=300, final_days=10),
        # Last fire long past but not expired yet (the expiry sweep has not come by): still active.
        await _task(connection, app_key, state="active", updated_days=300, final_days=100),
        await _task(connection, app_key),
    }
    kept_runs = {await _run(connection, task, "sent", created_days=50) for task in kept_tasks}
    # A task whose send is still open (deleted while a send was in flight) waits until that run is settled.
    with_open_run = await _task(connection, app_key, state="deleted", updated_days=100)
    kept_tasks.add(with_open_run)
    kept_runs.add(await _run(connection, with_open_run, "pending", created_days=100))

    assert await _queue(stores).purge_ended_schedules(RETENTION, 100, 1000) == (2, len(gone_runs))
    assert await _ids(connection, "schedules") == kept_tasks
    assert await _ids(connection, "runs") == kept_runs
    assert await _queue(stores).purge_ended_schedules(RETENTION, 100, 1000) == (0, 0)


async def test_a_task_the_engine_stopped_counts_from_when_it_stopped(
    stores: Stores, connection: asyncpg.Connection
) -> None:
    """Not from its last fire, which may be months ahead, or never come (a cron task without end)."""
    app_key = await _app(stores)
    stopped = {
        await _task(connection, app_key, state="expired", updated_days=100, final_days=final, stopped_reason="no tz")
        for final in (-200, float("-inf"))
    }
    recent = await _task(connection, app_key, state="expired", updated_days=10, final_days=-200, stopped_reason="x")
    assert await _queue(stores).purge_ended_schedules(RETENTION, 100, 1000) == (2, 0)
    assert await _ids(connection, "schedules") == {recent}
    assert stopped.isdisjoint(await _ids(connection, "schedules"))


async def test_each_purge_transaction_is_bounded(stores: Stores, connection: asyncpg.Connection) -> None:
    app_key = await _app(stores)
    for _ in range(12):
        task = await _task(connection, app_key, state="deleted", updated_days=100)
        for _ in range(5):
            await _run(connection, task, "sent", created_days=100)
    batches = []
    while batch := await _queue(stores).purge_ended_schedules(RETENTION, 10, 12):
        if batch == (0, 0):
            break
        batches.append(batch)
    # At most 12 runs a batch, taken task by task: of 12 runs of 5-run tasks, at least two tasks end whole.
    assert [runs for _, runs in batches] == [12] * 5
    assert sum(tasks for tasks, _ in batches) == 12 and min(tasks for tasks, _ in batches) >= 2
    assert await _ids(connection, "schedules") == set()

    task = await _task(connection, app_key)
    for _ in range(30):
        await _run(connection, task, "sent", created_days=100)
    assert [await _queue(stores).purge_old_runs(RETENTION, 7) for _ in range(6)] == [7, 7, 7, 7, 2, 0]


async def test_the_purge_skips_a_task_others_hold_locked_instead_of_waiting(
    stores: Stores, connection: asyncpg.Connection, database_url: str
) -> None:
    """A task another transaction holds (an API call, a planner, another replica's purge) is left for a later
    batch: the purge neither waits on it nor blocks its holder."""
    app_key = await _app(stores)
    held = await _task(connection, app_key, state="expired", updated_days=100, final_days=100)
    held_run = await _run(connection, held, "sent", created_days=50)
    free = await _task(connection, app_key, state="deleted", updated_days=100)
    await _run(connection, free, "sent", created_days=50)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM schedules WHERE id = $1 FOR UPDATE", held)
            assert await asyncio.wait_for(_queue(stores).purge_ended_schedules(RETENTION, 100, 1000), 5) == (1, 1)
            assert await _ids(connection, "schedules") == {held}
            assert await _ids(connection, "runs") == {held_run}
    finally:
        await holder.close()
    assert await _queue(stores).purge_ended_schedules(RETENTION, 100, 1000) == (1, 1)


async def test_a_task_expired_by_the_sweep_counts_from_its_expiry(
    stores: Stores, connection: asyncpg.Connection
) -> None:
    """Its last fire passed 100 days ago while no engine ran: expired now, it is kept RETENTION_DAYS from now."""
    task = await _task(connection, await _app(stores), updated_days=300, final_days=100)
    assert await _queue(stores).expire_lapsed() == 1
    [row] = await connection.fetch("SELECT state, now() - updated_at AS age FROM schedules WHERE id = $1", task)
    assert row["state"] == "expired" and row["age"] < dt.timedelta(minutes=1)
    assert await _queue(stores).purge_ended_schedules(RETENTION, 100, 1000) == (0, 0)
    assert await _ids(connection, "schedules") == {task}


async def test_the_sweep_stops_between_batches_when_the_engine_stops(
    stores: Stores, connection: asyncpg.Connection
) -> None:
    task = await _task(connection, await _app(stores))
    await connection.execute(
        "INSERT INTO runs (id, schedule_id, due_at, state, created_at, finished_at) "
        "SELECT gen_random_uuid(), $1, now() - interval '100 days' - n * interval '1 s', 'sent', "
        "now() - interval '100 days', now() - interval '100 days' FROM generate_series(1, 200) AS n",
        task,
    )
    retention = Retention(_queue(stores), retention=RETENTION, batch_size=5, interval=dt.timedelta(minutes=1),
                          min_pause_seconds=0.2)
    stopping = asyncio.Event()
    sweeping = asyncio.create_task(retention.run(stopping))
    count = "SELECT count(*) FROM runs"
    await eventually(lambda: connection.fetchval(count), "a batch purged", until=lambda left: left < 200)
    stopping.set()
    await asyncio.wait_for(sweeping, 1.0)
    assert 0 < await connection.fetchval(count) < 200


async def test_the_sweep_waits_while_the_engine_is_busy(stores: Stores, connection: asyncpg.Connection) -> None:
    """Sends in flight or runs planned ahead (a burst): the purge waits for them to end, up to a bound."""
    task = await _task(connection, await _app(stores))
    await _run(connection, task, "sent", created_days=100)
    busy = True
    retention = Retention(_queue(stores), retention=RETENTION, batch_size=5, interval=dt.timedelta(minutes=1),
                          busy=lambda: busy)
    sweeping = asyncio.create_task(retention.sweep())
    await asyncio.sleep(0.5)  # a fixed wait, proving that nothing is purged meanwhile
    assert await connection.fetchval("SELECT count(*) FROM runs") == 1
    busy = False
    assert (await asyncio.wait_for(sweeping, 5)).runs == 1


async def test_the_engine_sweep_purges_and_says_so(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession,
    stores: Stores, connection: asyncpg.Connection, caplog: pytest.LogCaptureFixture,
) -> None:
    app_key = await _app(stores)
    deleted = await _task(connection, app_key, state="deleted", updated_days=100)
    await _run(connection, deleted, "sent", created_days=100)
    active = await _task(connection, app_key)
    await _run(connection, active, "sent", created_days=100)
    kept = await _run(connection, active, "sent", created_days=1)
    caplog.set_level(logging.INFO, logger="service.engine.retention")
    service = await start_service(engine_settings(database_url, tmp_path, standin.url), aiohttp_server, session)
    await eventually(lambda: fetch(database_url, "SELECT id FROM runs"), "old runs purged",
                     until=lambda rows: [row["id"] for row in rows] == [kept])
    assert await _ids(connection, "schedules") == {active}
    # The sweep logs once it is over, after its last statements (the triggered runs' purge comes after the runs').
    [line] = await eventually(
        lambda: [record for record in caplog.records if getattr(record, "event", None) == "retention_purge"],
        "the sweep's log line",
    )
    assert (line.schedules, line.runs) == (1, 2)  # type: ignore[attr-defined]
    async with service.session.get(service.base_url + "/metrics") as response:
        metrics = await response.text()
    assert 'push_retention_purged_total{kind="runs"}' in metrics


def test_retention_days_zero_keeps_everything_forever(tmp_path: pathlib.Path) -> None:
    assert engine_config(Settings(data_dir=tmp_path)).retention == RETENTION
    assert engine_config(Settings(data_dir=tmp_path, retention_days=0)).retention is None
    with pytest.raises(ValueError, match="retention_days"):
        Settings(data_dir=tmp_path, retention_days=-1)


@pytest.fixture
def settings(database_url: str, tmp_path: pathlib.Path) -> Settings:
    """The API test below drives the purge itself: its engine keeps everything."""
    return Settings(database_url=database_url, data_dir=tmp_path, retention_days=0)


async def test_msg_ids_of_an_expired_task_answer_until_its_retention_passes(
    service: Service, stores: Stores, connection: asyncpg.Connection
) -> None:
    api = await service.new_app()
    app_key = api.auth.app_key
    recent = await _task(connection, app_key, state="expired", updated_days=10, final_days=10)
    await _run(connection, recent, "sent", created_days=10)
    old = await _task(connection, app_key, state="expired", updated_days=100, final_days=100)
    old_run = await _run(connection, old, "sent", created_days=100)
    assert (await api.msg_ids(str(old))).json["msgids"] == [f"msg-{old_run}"]
    assert len((await api.msg_ids(str(recent))).json["msgids"]) == 1

    assert await _queue(stores).purge_ended_schedules(RETENTION, 100, 1000) == (1, 1)
    assert (await api.msg_ids(str(old))).status == 404
    assert len((await api.msg_ids(str(recent))).json["msgids"]) == 1
    api.check_against_spec()


async def test_a_deleted_app_is_purged_once_its_retention_passed_and_its_tasks_are_gone(
    stores: Stores, connection: asyncpg.Connection
) -> None:
    long_ago, recently, active = await _app(stores), await _app(stores), await _app(stores)
    task = await _task(connection, long_ago)
    for app_key in (long_ago, recently):
        await admin.set_app_state(stores.schedules, app_key, "deleted", dt.datetime.now(dt.timezone.utc))
    await connection.execute(
        "UPDATE apps SET state_changed_at = now() - interval '100 days' WHERE app_key = $1", long_ago
    )
    await connection.execute("UPDATE schedules SET updated_at = now() - interval '100 days' WHERE id = $1", task)
    # Its task is still there: the app stays until the task purge took it.
    assert await _queue(stores).purge_deleted_apps(RETENTION) == 0
    report = await Retention(_queue(stores), retention=RETENTION, batch_size=100, interval=dt.timedelta(minutes=1)).sweep()
    assert (report.schedules, report.apps) == (1, 1)
    remaining = {row["app_key"] for row in await connection.fetch("SELECT app_key FROM apps")}
    assert remaining == {recently, active}


async def _triggered(connection: asyncpg.Connection, schedule_id: uuid.UUID, *, created_days: float, pushes: int) -> uuid.UUID:
    """A triggered run (issue 13) made `created_days` ago whose `pushes` pushes were sent then."""
    trigger_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO triggered_runs (id, schedule_id, source, total, created_at) "
        "VALUES ($1, $2, 'webhook', $3, now() - $4 * interval '1 day')",
        trigger_id, schedule_id, pushes, created_days,
    )
    await connection.execute(
        "INSERT INTO runs (id, schedule_id, due_at, state, created_at, finished_at, sent_at, msg_id, trigger_id, "
        "trigger_item) SELECT gen_random_uuid(), $1, now() - $2 * interval '1 day', 'sent', "
        "now() - $2 * interval '1 day', now() - $2 * interval '1 day', now() - $2 * interval '1 day', 'm', $3, item "
        "FROM generate_series(0, $4 - 1) AS item",
        schedule_id, created_days, trigger_id, pushes,
    )
    return trigger_id


async def test_triggered_runs_go_once_their_pushes_are_purged(stores: Stores, connection: asyncpg.Connection) -> None:
    app_key = await _app(stores)
    active = await _task(connection, app_key)
    old = await _triggered(connection, active, created_days=100, pushes=3)
    recent = await _triggered(connection, active, created_days=10, pushes=2)
    deleted = await _task(connection, app_key, state="deleted", updated_days=100)
    await _triggered(connection, deleted, created_days=120, pushes=2)
    # The deleted task goes with its triggered run and their pushes (they reference it).
    assert await _queue(stores).purge_ended_schedules(RETENTION, 100, 1000) == (1, 2)
    assert await _ids(connection, "schedules") == {active}
    # The old triggered run of the live task goes after its pushes; the recent one stays, pushes and all.
    assert await _queue(stores).purge_old_triggers(RETENTION, 1000) == 0  # its pushes are still there
    assert await _queue(stores).purge_old_runs(RETENTION, 1000) == 3
    assert await _queue(stores).purge_old_triggers(RETENTION, 1000) == 1
    assert await _ids(connection, "triggered_runs") == {recent}
    assert len(await _ids(connection, "runs")) == 2
    assert old not in await _ids(connection, "triggered_runs")
