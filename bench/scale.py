"""Scale: the API's and the engine's hot paths with 1k stored tasks, then with 1M; EXPLAIN of the hot
queries (they must use their indexes) and the service's RSS.

    .venv/bin/python -m bench.scale --stored 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import statistics
import time
import uuid
from typing import Any

import aiohttp
import asyncpg

from bench.harness import UTC, Bench, machine, worker_rss_mib
from service.store import database
from service.store.queries import SQL

APPS = 1000


async def fill(dsn: str, app_keys: list[str], total: int) -> None:
    """`total` valid tasks spread over `app_keys` and over the coming year, in one statement."""
    push = {"to": "all", "body": {"platform": "all", "notification": {"alert": "stored"}}}
    connection = await asyncpg.connect(dsn)
    try:
        await database.register_json_codecs(connection)
        await connection.execute(
            "INSERT INTO schedules (id, app_key, name, enabled, trigger, push, next_fire_at, final_fire_at, kind, "
            "zone_type, time_zone) "
            "SELECT gen_random_uuid(), ($1::text[])[1 + n % array_length($1::text[], 1)], 'stored_' || n, true, "
            "jsonb_build_object('single', jsonb_build_object('time', to_char(due, 'YYYY-MM-DD HH24:MI:SS'), 'zone_type', 1)), "
            "$2, due, due, 'single', 1, 'UTC' "
            "FROM (SELECT n, now() + interval '1 day' + (n % 300) * interval '1 day' + (n % 86400) * interval '1 second' AS due "
            "      FROM generate_series(1, $3) AS n) AS spread",
            app_keys, push, total,
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def timed(session: aiohttp.ClientSession, method: str, url: str, count: int, **kwargs: Any) -> dict[str, float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        async with session.request(method, url, **kwargs) as response:
            await response.read()
            assert response.status == 200, response.status
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"mean_ms": round(statistics.fmean(samples), 2), "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2)}


SORTS = ("created", "name", "next_run", "last_run")


async def explain(dsn: str, app_key: str, schedule_id: Any, big_app: str) -> dict[str, Any]:
    now = dt.datetime.now(UTC)
    unfiltered = [now, "", "\U0010ffff", None, None, None]
    sorted_pages = {
        f"list_schedules_by_{key}{suffix} ({where})": (SQL[f"list_schedules_by_{key}{suffix}"], [app, *unfiltered, 50, offset])
        for key in SORTS
        for suffix in ("", "_desc")
        # page 1 of the probe app, and the last page (20) of an app holding 1,000 tasks at 1M stored
        for where, app, offset in (("page 1", app_key, 0), ("big app, page 20", big_app, 950))
    }
    plans = {
        "get_app": (SQL["get_app"], [app_key]),
        "count_listed_schedules": (SQL["count_listed_schedules"], [app_key, *unfiltered]),
        **sorted_pages,
        "get_valid_schedule": (SQL["get_valid_schedule"], [schedule_id, app_key, now]),
        # A PL/pgSQL function: EXPLAIN shows its time, not the plans of its statements.
        "plan_single_fires (engine plan)": (
            SQL["plan_single_fires"],
            [dt.timedelta(0), 500, dt.timedelta(minutes=5), dt.timedelta(seconds=5), dt.timedelta(seconds=60), 200,
             uuid.uuid4()],
        ),
        "lock_due_schedules (engine plan, other triggers)": (SQL["lock_due_schedules"], [dt.timedelta(0), 500]),
        "claim_due_runs (function)": (
            SQL["claim_due_runs"], [500, dt.timedelta(seconds=60), dt.timedelta(minutes=5), 8, uuid.uuid4()]
        ),
        "next_plan_wake": (SQL["next_plan_wake"], [dt.timedelta(seconds=2)]),
        "next_claim_wake": (SQL["next_claim_wake"], []),
    }
    connection = await asyncpg.connect(dsn)
    out: dict[str, Any] = {}
    try:
        for name, (query, args) in plans.items():
            # EXPLAIN ANALYZE of an UPDATE really updates: each runs in a transaction rolled back after.
            transaction = connection.transaction()
            await transaction.start()
            try:
                if name.startswith("lock_due"):  # as the engine runs them
                    await connection.execute(SQL["prefer_ordered_index_scans"])
                rows = await connection.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + query, *args)
            finally:
                await transaction.rollback()
            lines = [row[0] for row in rows]
            out[name] = {
                "execution_ms": float(next(line for line in lines if line.startswith("Execution Time")).split()[2]),
                "plan": [line.strip() for line in lines if "Scan" in line][:4],
            }
    finally:
        await connection.close()
    return out


async def measure(bench: Bench, auth: str, schedule_id: str, service_pid: int) -> dict[str, Any]:
    """Latency of create, detail, the default list and each sort of the list (page 1, and `-` for descending)."""
    when = (dt.datetime.now(UTC) + dt.timedelta(days=200)).strftime("%Y-%m-%d %H:%M:%S")
    body = {"name": "probe", "enabled": True, "trigger": {"single": {"time": when}}, "push": {"to": "all", "body": {"platform": "all", "notification": {"alert": "x"}}}}
    async with aiohttp.ClientSession(headers={"Authorization": auth}) as session:
        base = bench.service_url + "/v4/schedules"
        return {
            "create": await timed(session, "POST", base, 200, json=body),
            "detail": await timed(session, "GET", f"{base}/{schedule_id}", 500),
            "list": await timed(session, "GET", base + "?page=1", 200),
            **{
                f"list sort={direction}{key}": await timed(session, "GET", f"{base}?page=1&sort={direction}{key}", 100)
                for key in SORTS
                for direction in ("", "-")
            },
            # Per serving process: one number with WORKERS=1, one per worker (the parent serves nothing) else.
            "service_rss_mib": worker_rss_mib(service_pid),
        }


async def run(stored: int) -> dict[str, Any]:
    async with Bench() as bench:
        await bench.start_service()
        service_pid = bench.processes[-1].pid
        probe = await bench.new_app(max_schedules=1_000_000)
        auth = "Basic " + base64.b64encode(f"{probe.app.app_key}:{probe.master_secret}".encode()).decode()
        others = [(await bench.new_app()).app.app_key for _ in range(APPS)]
        await fill(bench.dsn, others, 1000)
        async with aiohttp.ClientSession(headers={"Authorization": auth}) as session:
            for n in range(50):
                when = (dt.datetime.now(UTC) + dt.timedelta(days=100)).strftime("%Y-%m-%d %H:%M:%S")
                async with session.post(bench.service_url + "/v4/schedules", json={"name": f"p{n}", "enabled": True, "trigger": {"single": {"time": when}}, "push": {"to": "all", "body": {"platform": "all", "notification": {"alert": "x"}}}}) as response:
                    schedule_id = (await response.json())["schedule_id"]
        small = await measure(bench, auth, schedule_id, service_pid)
        small["explain"] = await explain(bench.dsn, probe.app.app_key, uuid.UUID(schedule_id), others[0])
        started = time.time()
        await fill(bench.dsn, others, stored - 1000)
        fill_s = time.time() - started
        large = await measure(bench, auth, schedule_id, service_pid)
        large["explain"] = await explain(bench.dsn, probe.app.app_key, uuid.UUID(schedule_id), others[0])
    return {"benchmark": "scale", "machine": machine(), "fill_seconds": round(fill_s, 1), "stored_1k": small, f"stored_{stored}": large}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.stored)), indent=2))


if __name__ == "__main__":
    main()
