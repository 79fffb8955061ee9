"""What a user would otherwise pick, firing the same burst into the same stand-in on the same PostgreSQL:

- `ceiling`: one bare aiohttp client posting the N pushes as fast as it can (no scheduler can beat it here);
- `service`: this service (its own process, http backend);
- `apscheduler`: APScheduler 3.11, AsyncIOScheduler with its SQLAlchemy job store on the same PostgreSQL;
- `procrastinate`: Procrastinate jobs deferred with schedule_at, one async worker.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m bench.alternatives --count 10000 [--only service,apscheduler]

Each scheduler gets a fresh database on one embedded PostgreSQL server; set-up (creating the N jobs) is not
timed: every job is due at one instant far enough ahead, and the clock runs from that instant to the
stand-in's last receipt. The ceiling's clock runs from its first request.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
import urllib.parse
import uuid
from typing import Any

import aiohttp
import asyncpg

from bench.harness import UTC, Bench, machine, percentiles
from tests.bulk import bulk_schedules

CONCURRENCY = 200
_session: aiohttp.ClientSession | None = None
_standin_url = ""


def _push(key: str) -> dict[str, Any]:
    return {"to": "all", "body": {"platform": "all", "notification": {"alert": "burst"}, "options": {"cid": key}}}


async def deliver(key: str) -> None:
    """The job every alternative runs: one push to the stand-in (module level, so job stores can name it)."""
    assert _session is not None
    async with _session.post(_standin_url + "/v4/push", json=_push(key)) as response:
        await response.read()


async def _open_session(standin_url: str) -> None:
    global _session, _standin_url
    _standin_url = standin_url
    _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))


async def _close_session() -> None:
    global _session
    if _session is not None:
        await _session.close()
        _session = None


async def _fresh_database(server_dsn: str, name: str) -> str:
    connection = await asyncpg.connect(server_dsn)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    parts = urllib.parse.urlsplit(server_dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


async def _wait_for_deliveries(bench: Bench, count: int, deadline: float) -> list[list[Any]]:
    delivered: list[list[Any]] = []
    while time.time() < deadline:
        await asyncio.sleep(0.5)
        delivered = await bench.standin_deliveries()
        if len({key for key, _, _ in delivered}) >= count:
            break
    return delivered


def _report(name: str, count: int, start: float, delivered: list[list[Any]], setup_s: float) -> dict[str, Any]:
    arrivals = sorted(received_at for _, received_at, _ in delivered)
    last = arrivals[-1] - start if arrivals else None
    return {
        "scheduler": name,
        "tasks": count,
        "delivered": len(arrivals),
        "distinct_keys": len({key for key, _, _ in delivered}),
        "setup_s": round(setup_s, 2),
        "last_delivery_after_due_s": round(last, 3) if last is not None else None,
        "deliveries_per_second": round(len(arrivals) / last, 1) if last else None,
        "lateness_ms": percentiles([(arrival - start) * 1000 for arrival in arrivals]) if arrivals else None,
    }


async def _reset(bench: Bench) -> None:
    async with aiohttp.ClientSession() as session, session.post(bench.standin_url + "/_reset") as response:
        await response.read()


async def run_ceiling(bench: Bench, count: int) -> dict[str, Any]:
    await _open_session(bench.standin_url)
    try:
        keys = [uuid.uuid4().hex for _ in range(count)]
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(key: str) -> None:
            async with semaphore:
                await deliver(key)

        start = time.time()
        await asyncio.gather(*(one(key) for key in keys))
    finally:
        await _close_session()
    return _report("ceiling (bare aiohttp client)", count, start, await bench.standin_deliveries(), 0.0)


async def run_service(bench: Bench, count: int, lead: float) -> dict[str, Any]:
    await bench.start_service()
    app = await bench.new_app()
    started = time.time()
    due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=lead)
    await bulk_schedules(bench.dsn, app.app.app_key, due, count)
    setup = time.time() - started
    delivered = await _wait_for_deliveries(bench, count, due.timestamp() + 300)
    return _report("push-schedule-service", count, due.timestamp(), delivered, setup)


async def run_apscheduler(bench: Bench, count: int, lead: float) -> dict[str, Any]:
    from apscheduler.executors.asyncio import AsyncIOExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    dsn = await _fresh_database(bench.dsn, "alt_apscheduler")
    url = dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
    await _open_session(bench.standin_url)
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)},
        executors={"default": AsyncIOExecutor()},
        job_defaults={"misfire_grace_time": 300, "coalesce": False, "max_instances": 1},
        timezone=UTC,
    )
    scheduler.start(paused=True)
    try:
        started = time.time()
        due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=lead)
        for _ in range(count):
            key = uuid.uuid4().hex
            scheduler.add_job(deliver, "date", run_date=due, args=[key], id=key)
        setup = time.time() - started
        if dt.datetime.now(UTC) >= due:
            raise SystemExit(f"apscheduler set-up took {setup:.1f} s, longer than --lead")
        scheduler.resume()
        delivered = await _wait_for_deliveries(bench, count, due.timestamp() + 300)
    finally:
        scheduler.shutdown(wait=False)
        await _close_session()
    return _report("APScheduler 3.11 + SQLAlchemy job store", count, due.timestamp(), delivered, setup)


async def run_procrastinate(bench: Bench, count: int, lead: float) -> dict[str, Any]:
    import procrastinate

    dsn = await _fresh_database(bench.dsn, "alt_procrastinate")
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    task = app.task(name="deliver", queue="push")(deliver)
    await _open_session(bench.standin_url)
    try:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            started = time.time()
            due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=lead)
            await task.configure(schedule_at=due).batch_defer_async(*({"key": uuid.uuid4().hex} for _ in range(count)))
            setup = time.time() - started
            worker = asyncio.create_task(
                app.run_worker_async(queues=["push"], concurrency=CONCURRENCY, install_signal_handlers=False)
            )
            delivered = await _wait_for_deliveries(bench, count, due.timestamp() + 300)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
    finally:
        await _close_session()
    return _report("Procrastinate 3 (schedule_at, 1 worker)", count, due.timestamp(), delivered, setup)


async def run(count: int, only: list[str], lead: float) -> list[dict[str, Any]]:
    results = []
    async with Bench() as bench:
        for name in only:
            await _reset(bench)
            if name == "ceiling":
                results.append(await run_ceiling(bench, count))
            elif name == "service":
                results.append(await run_service(bench, count, lead))
            elif name == "apscheduler":
                results.append(await run_apscheduler(bench, count, lead + count / 300))
            elif name == "procrastinate":
                results.append(await run_procrastinate(bench, count, lead + count / 2000))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--only", default="ceiling,service,apscheduler,procrastinate")
    parser.add_argument("--lead", type=float, default=5.0, help="seconds from set-up to the due instant")
    args = parser.parse_args()
    results = asyncio.run(run(args.count, args.only.split(","), args.lead))
    print(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
