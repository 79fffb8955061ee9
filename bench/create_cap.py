"""What the cap's count costs a create: the SQL function create_schedule called straight (no HTTP, no Python
validation), sequentially for an app already holding `--stored` tasks, then from 32 connections at once for one
app and for 50 apps. Until sql/0011 create_schedule counted the app's valid tasks under the app's row lock, so its
cost grew with the app; now it counts only when the app's bound reaches its cap. Run it from a worktree holding
another create_schedule to compare (bench/README, "The cap's count").

    .venv/bin/python -m bench.create_cap --stored 20000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
import uuid
from typing import Any

import asyncpg

from bench.harness import UTC, Bench, machine
from service.store.queries import SQL
from tests.bulk import bulk_schedules

TRIGGER = json.dumps({"single": {"time": "2099-01-01 00:00:00", "zone_type": 1}})
PUSH = json.dumps({"to": "all", "body": {"platform": "all", "notification": {"alert": "x"}}})
FAR = dt.datetime(2099, 1, 1, tzinfo=UTC)
CONNECTIONS = 32


async def create(connection: asyncpg.Connection, app_key: str) -> None:
    now = dt.datetime.now(UTC)
    row = await connection.fetchrow(
        SQL["create_schedule"], uuid.uuid4(), app_key, "probe", True, TRIGGER, PUSH, None, FAR, FAR, now, [], [],
        dt.timedelta(seconds=5), "single", 1, "UTC", "", 0, "{}",
    )  # fmt: skip
    assert row["outcome"] == "created", row


async def concurrent_rate(pool: asyncpg.Pool, app_keys: list[str], seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal done
        while time.perf_counter() < end:
            async with pool.acquire() as connection:
                await create(connection, app_keys[(n + done) % len(app_keys)])
            done += 1

    await asyncio.gather(*(client(n) for n in range(CONNECTIONS)))
    return round(done / seconds, 1)


async def run(stored: int, seconds: float) -> dict[str, Any]:
    async with Bench() as bench:
        big = (await bench.new_app(max_schedules=10_000_000)).app.app_key
        await bulk_schedules(bench.dsn, big, dt.datetime.now(UTC) + dt.timedelta(days=1), stored)
        connection = await asyncpg.connect(bench.dsn)
        try:
            await connection.execute("ANALYZE schedules")
            started = time.perf_counter()
            for _ in range(500):
                await create(connection, big)
            sequential_ms = (time.perf_counter() - started) / 500 * 1000
        finally:
            await connection.close()
        one = [(await bench.new_app(max_schedules=10_000_000)).app.app_key]
        fifty = [(await bench.new_app(max_schedules=10_000_000)).app.app_key for _ in range(50)]
        pool = await asyncpg.create_pool(bench.dsn, min_size=CONNECTIONS, max_size=CONNECTIONS)
        try:
            one_app = [await concurrent_rate(pool, one, seconds) for _ in range(2)]
            fifty_apps = [await concurrent_rate(pool, fifty, seconds) for _ in range(2)]
        finally:
            await pool.close()
    return {
        "benchmark": "create_cap",
        "machine": machine(),
        f"sequential_create_ms_app_of_{stored}": round(sequential_ms, 3),
        f"creates_per_s_{CONNECTIONS}_connections_one_app (two {seconds:g} s rounds, the app growing)": one_app,
        f"creates_per_s_{CONNECTIONS}_connections_50_apps": fifty_apps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=20_000, help="tasks of the app the sequential creates go to")
    parser.add_argument("--seconds", type=float, default=5.0, help="each concurrent round")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.stored, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
