"""Where a create's database CPU goes: the SQL function create_schedule called straight (no HTTP, no Python
validation) from one connection, 3,000 times per variant, reading the CPU of that connection's backend process.
Each variant is a fresh embedded database changed only for the measurement, never as the service runs:

- main: as migrated;
- without the commit's flush: `SET synchronous_commit = off` for the session, to see what the WAL flush each
  commit waits for costs (the service never turns it off: an acknowledged create must survive a crash);
- without the cap's trigger (sql/0011 raise_cap_bounds), and without the list and retention indexes.

Then the WAL flushes per create with 32 clients on a pool of 10 connections (the API pool's default), creating for 50 apps (PostgreSQL's group commit: one flush
covers every commit waiting for it). Needs PostgreSQL 16+ (pg_stat_io); the embedded one is 18.

    .venv/bin/python -m bench.create_cost --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import asyncpg
import psutil

from bench.create_cap import concurrent_rate, create
from bench.harness import Bench, machine

CALLS = 3_000
VARIANTS: dict[str, list[str]] = {
    "main": [],
    "without the commit's WAL flush (synchronous_commit off)": ["SET synchronous_commit = off"],
    "without the cap's trigger": ["DROP TRIGGER schedules_raise_cap_bounds ON schedules"],
    "without the 3 list indexes, retention's and final fire's": [
        "DROP INDEX schedules_app_name_idx",
        "DROP INDEX schedules_app_next_run_idx",
        "DROP INDEX schedules_app_last_run_idx",
        "DROP INDEX schedules_ended_idx",
        "DROP INDEX schedules_app_final_fire_idx",
    ],
}


async def backend_cpu_us(connection: asyncpg.Connection, app_key: str) -> float:
    """The backend's CPU (user + system) per create, in µs, after 300 creates of warm-up."""
    backend = psutil.Process(await connection.fetchval("SELECT pg_backend_pid()"))
    for _ in range(300):
        await create(connection, app_key)
    before = backend.cpu_times()
    for _ in range(CALLS):
        await create(connection, app_key)
    after = backend.cpu_times()
    return round((after.user + after.system - before.user - before.system) / CALLS * 1e6, 1)


async def wal_flushes(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal'"))


async def run(rounds: int, seconds: float) -> dict[str, Any]:
    sequential: dict[str, list[float]] = {name: [] for name in VARIANTS}
    concurrent: list[dict[str, float]] = []
    for _ in range(rounds):
        for name, statements in VARIANTS.items():
            async with Bench() as bench:
                app_key = (await bench.new_app(max_schedules=10_000_000)).app.app_key
                connection = await asyncpg.connect(bench.dsn)
                try:
                    for statement in statements:
                        await connection.execute(statement)
                    sequential[name].append(await backend_cpu_us(connection, app_key))
                finally:
                    await connection.close()
        async with Bench() as bench:
            apps = [(await bench.new_app(max_schedules=10_000_000)).app.app_key for _ in range(50)]
            pool = await asyncpg.create_pool(bench.dsn, min_size=10, max_size=10)
            connection = await asyncpg.connect(bench.dsn)
            try:
                before = await wal_flushes(connection)
                rate = await concurrent_rate(pool, apps, seconds)
                flushes = await wal_flushes(connection) - before
            finally:
                await connection.close()
                await pool.close()
            concurrent.append({"creates_per_s": rate, "wal_flushes_per_create": round(flushes / (rate * seconds), 3)})
    return {
        "benchmark": "create_cost",
        "machine": machine(),
        "backend_cpu_us_per_sequential_create": sequential,
        "32_clients_on_a_pool_of_10_50_apps": concurrent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="the concurrent round")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rounds, args.seconds)), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
