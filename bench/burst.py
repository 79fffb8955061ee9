"""A burst: N tasks due at the same second. With the http backend (default) they go to a loopback stand-in
(its own process): reports the time from the due instant to the last delivery, deliveries per second and
duplicates. With `--backend local` the service is its own sink: reports the time until every run is
planned and recorded as sent in PostgreSQL.

    .venv/bin/python -m bench.burst --count 10000
    .venv/bin/python -m bench.burst --count 100000 --backend local --lead 15
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time

from bench.harness import UTC, Bench, machine, percentiles
from tests.bulk import bulk_schedules

PROFILE_SECONDS = 3


async def run_local(count: int, lead_seconds: float, engines: int, profile: str | None) -> dict[str, object]:
    import asyncpg

    async with Bench() as bench:
        for _ in range(engines):
            await bench.start_service(PUSH_API_URL="", LOG_LEVEL="WARNING")
        app = await bench.new_app()
        due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=lead_seconds)
        await bulk_schedules(bench.dsn, app.app.app_key, due, count)
        if dt.datetime.now(UTC) >= due:
            raise SystemExit("setting up took longer than --lead; raise it")
        connection = await asyncpg.connect(bench.dsn)
        try:
            writes_before = await _writes(connection)
            cpu_before = await _cpu_at(bench, due, profile)
            sent = 0
            while time.time() < due.timestamp() + 300:
                await asyncio.sleep(0.2)
                sent = await connection.fetchval("SELECT count(*) FROM runs WHERE state = 'sent'")
                if sent >= count:
                    break
            last = await connection.fetchval("SELECT max(sent_at) FROM runs WHERE state = 'sent'")
            cpu = _cpu_used(cpu_before, bench.cpu_seconds())
            planned = await connection.fetchval("SELECT count(*) FROM runs")
            await asyncio.sleep(1.5)  # backends flush their table counters at most once a second
            writes = _per_run(writes_before, await _writes(connection), count)
        finally:
            await connection.close()
    return {
        "benchmark": "burst, local backend",
        "machine": machine(),
        "engines": engines,
        "tasks": count,
        "runs_planned": planned,
        "runs_sent": sent,
        "last_recorded_after_due_s": round((last - due).total_seconds(), 3) if last else None,
        "cpu_seconds_from_due_until_done": cpu,
        "writes_per_run": writes,
    }


async def run(count: int, lead_seconds: float, engines: int, profile: str | None) -> dict[str, object]:
    async with Bench() as bench:
        for _ in range(engines):
            await bench.start_service()
        app = await bench.new_app()
        due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=lead_seconds)
        await bulk_schedules(bench.dsn, app.app.app_key, due, count)
        if dt.datetime.now(UTC) >= due:
            raise SystemExit("setting up took longer than --lead; raise it")
        cpu_before = await _cpu_at(bench, due, profile)
        deadline = due.timestamp() + 120
        delivered: list = []
        while time.time() < deadline:
            await asyncio.sleep(0.5)
            delivered = await bench.standin_deliveries()
            if len({cid for cid, _, _ in delivered}) >= count:
                break
        cpu = _cpu_used(cpu_before, bench.cpu_seconds())
        await asyncio.sleep(1.0)
        delivered = await bench.standin_deliveries()
    arrivals = sorted(received_at for _, received_at, _ in delivered)
    keys = {cid for cid, _, _ in delivered}
    last = arrivals[-1] - due.timestamp() if arrivals else None
    return {
        "benchmark": "burst",
        "machine": machine(),
        "engines": engines,
        "tasks": count,
        "delivered": len(arrivals),
        "distinct_keys": len(keys),
        "first_delivery_after_due_s": round(arrivals[0] - due.timestamp(), 3) if arrivals else None,
        "last_delivery_after_due_s": round(last, 3) if last is not None else None,
        "deliveries_per_second": round(len(arrivals) / last, 1) if last else None,
        "lateness_ms": percentiles([(arrival - due.timestamp()) * 1000 for arrival in arrivals]),
        "cpu_seconds_from_due_until_done": cpu,
    }


async def _writes(connection: object) -> dict[str, float]:
    """What the database has written so far: WAL bytes, and row inserts and updates (HOT or not) per table."""
    row = await connection.fetchrow(  # type: ignore[attr-defined]
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal,"
        " (SELECT jsonb_object_agg(relname, jsonb_build_object('inserts', n_tup_ins, 'updates', n_tup_upd,"
        "  'hot_updates', n_tup_hot_upd)) FROM pg_stat_user_tables WHERE relname IN ('schedules', 'runs')) AS rows"
    )
    counts = json.loads(row["rows"])
    out = {"wal_bytes": float(row["wal"])}
    for table, figures in counts.items():
        out.update({f"{table}_{name}": float(value) for name, value in figures.items()})
    return out


def _per_run(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    """Each write counter's growth over the burst, per run (the 0.2 s polling's reads write nothing)."""
    return {name: round((after[name] - before.get(name, 0.0)) / runs, 2) for name in after}


async def _cpu_at(bench: Bench, due: dt.datetime, profile: str | None) -> dict[str, float]:
    """Each part's CPU time, read just before the due instant; py-spy starts sampling the service then."""
    await asyncio.sleep(max(0.0, due.timestamp() - time.time() - 0.05))
    if profile:
        bench.profile_service(profile, PROFILE_SECONDS)
    return bench.cpu_seconds()


def _cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each part used in between (the polling adds up to its interval of idle time at the end)."""
    return {part: round(after[part] - before.get(part, 0.0), 2) for part in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--engines", type=int, default=1, help="service processes sharing the database")
    parser.add_argument("--lead", type=float, default=5.0, help="seconds from set-up to the due instant")
    parser.add_argument("--backend", choices=("http", "local"), default="http")
    parser.add_argument("--profile", metavar="FILE", help=f"py-spy the service for {PROFILE_SECONDS} s from the due instant")
    args = parser.parse_args()
    if args.backend == "local":
        print(json.dumps(asyncio.run(run_local(args.count, args.lead, args.engines, args.profile)), indent=2))
    else:
        print(json.dumps(asyncio.run(run(args.count, args.lead, args.engines, args.profile)), indent=2))


if __name__ == "__main__":
    main()
