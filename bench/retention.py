"""Retention under load: a burst of N tasks due at one second while the engine's retention sweep purges a
million old runs, next to the same burst with the same old rows and no purge.

Each arm starts its own processes (harness.Bench: a fresh embedded PostgreSQL, the stand-in, the service). The
old rows are written first, with generate_series: tasks of which half expired long ago (their runs go with
them, sql/0007 purge_ended_schedules) and half are active periodical tasks (their old runs go by age,
purge_old_runs), `--runs-per-task` runs each, all ended 100 to 190 days ago. Then the burst is inserted, due
`--lead` seconds later, and the service starts: in the `purge` arm with RETENTION_DAYS=90, so its engine's
sweep starts purging at once and is still at it when the burst falls due; in the `quiet` arm with
RETENTION_DAYS=0. Both arms log at INFO (the sweep's summary is an INFO line: rows, transactions, the
longest), so both pay for the 10k dispatch lines.

    .venv/bin/python -m bench.retention --old-runs 1000000 --count 10000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import pathlib
import time
from typing import Any

import asyncpg

from bench.harness import UTC, Bench, machine, percentiles
from tests.bulk import bulk_schedules


async def old_rows(dsn: str, app_key: str, runs: int, runs_per_task: int) -> dict[str, Any]:
    """`runs` old runs in a final state, over runs / runs_per_task tasks: the even ones expired 95 days ago, the
    odd ones active periodical tasks. Every run ended 100 to 190 days ago."""
    tasks = max(1, runs // runs_per_task)
    started = time.monotonic()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO schedules (id, app_key, name, enabled, trigger, push, next_fire_at, final_fire_at, kind, "
            "zone_type, time_zone, state, created_at, updated_at) "
            "SELECT gen_random_uuid(), $1, 'old_' || n, true, '{\"periodical\": {}}', '{\"to\": \"all\"}', NULL, "
            "CASE WHEN n % 2 = 0 THEN now() - interval '95 days' ELSE now() + interval '90 days' END, "
            "'periodical', 1, 'UTC', CASE WHEN n % 2 = 0 THEN 'expired' ELSE 'active' END, "
            "now() - interval '200 days', now() - interval '95 days' FROM generate_series(1, $2) AS n",
            app_key, tasks,
        )
        # In the order the engine would have written them: oldest first, the tasks' runs interleaved.
        await connection.execute(
            "INSERT INTO runs (id, schedule_id, due_at, state, attempts, msg_id, created_at, sent_at, finished_at) "
            "SELECT gen_random_uuid(), task.id, fire.due, 'sent', 1, 'old-' || fire.n || '-' || task.k, "
            "fire.due - interval '2 s', fire.due + interval '20 ms', fire.due + interval '20 ms' "
            "FROM generate_series(1, $1) AS fire_n "
            "CROSS JOIN LATERAL (SELECT fire_n AS n, "
            "                   now() - interval '190 days' + fire_n * (interval '90 days' / $1) AS due) AS fire "
            "CROSS JOIN (SELECT id, row_number() OVER () AS k FROM schedules WHERE name LIKE 'old\\_%') AS task",
            runs_per_task,
        )
        await connection.execute("VACUUM ANALYZE schedules")
        await connection.execute("VACUUM ANALYZE runs")
        stored = await connection.fetchval("SELECT count(*) FROM runs")
    finally:
        await connection.close()
    return {"tasks": tasks, "runs": stored, "set_up_seconds": round(time.monotonic() - started, 1)}


async def arm(purge: bool, args: argparse.Namespace) -> dict[str, Any]:
    async with Bench() as bench:
        app = await bench.new_app()
        old = await old_rows(bench.dsn, app.app.app_key, args.old_runs, args.runs_per_task)
        due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=args.lead)
        await bulk_schedules(bench.dsn, app.app.app_key, due, args.count)
        log = bench.workdir / "service.log"
        await bench.start_service(log, RETENTION_DAYS="90" if purge else "0", LOG_LEVEL="INFO",
                                  RETENTION_BATCH_SIZE=str(args.batch_size))
        service_up = time.time()
        if time.time() >= due.timestamp() - 3:
            raise SystemExit("setting up took longer than --lead; raise it")
        delivered: list[Any] = []
        vacuums: set[str] = set()  # what autovacuum was seen doing during the burst (the purge's dead rows)
        watcher = await asyncpg.connect(bench.dsn)
        try:
            while time.time() < due.timestamp() + 120:
                await asyncio.sleep(0.5)
                if time.time() >= due.timestamp() - 2:  # from planning on
                    rows = await watcher.fetch("SELECT relid::regclass::text AS tab, phase FROM pg_stat_progress_vacuum")
                    vacuums.update(f"{row['tab']}: {row['phase']}" for row in rows)
                delivered = await bench.standin_deliveries()
                if len({cid for cid, _, _ in delivered}) >= args.count:
                    break
        finally:
            await watcher.close()
        purge_report = None
        if purge:
            purge_report = await _purge_line(log, time.time() + 300)
            purge_report["started_before_due_s"] = round(due.timestamp() - service_up, 1)
            purge_report["rows_per_second"] = round(
                (purge_report["schedules"] + purge_report["runs"]) / purge_report["seconds"]
            )
    arrivals = sorted(received_at for _, received_at, _ in delivered)
    return {
        "arm": "purge" if purge else "quiet",
        "old_rows": old,
        "delivered": len(arrivals),
        "distinct_keys": len({cid for cid, _, _ in delivered}),
        "last_delivery_after_due_s": round(arrivals[-1] - due.timestamp(), 3) if arrivals else None,
        "lateness_ms": {key: round(value, 1) for key, value in
                        percentiles([(arrival - due.timestamp()) * 1000 for arrival in arrivals]).items()},
        "autovacuum_during_burst": sorted(vacuums),
        "purge": purge_report,
    }


async def _purge_line(log: pathlib.Path, deadline: float) -> dict[str, Any]:
    """The sweep's summary line (event retention_purge), once the sweep is done."""
    while time.time() < deadline:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        for line in text.splitlines():
            if '"retention_purge"' in line:
                record = json.loads(line)
                return {key: record[key] for key in ("schedules", "runs", "batches", "seconds", "median_batch_ms",
                                                    "p99_batch_ms", "longest_batch_ms")}
        await asyncio.sleep(1.0)
    raise SystemExit("the retention sweep did not finish in time")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    arms = [await arm(name == "purge", args) for name in args.arms.split(",")]
    return {"benchmark": "retention", "machine": machine(), "burst": args.count, "batch_size": args.batch_size,
            "arms": arms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-runs", type=int, default=1_000_000)
    parser.add_argument("--runs-per-task", type=int, default=100)
    parser.add_argument("--count", type=int, default=10_000, help="tasks of the burst, due at one second")
    parser.add_argument("--lead", type=float, default=15.0,
                        help="seconds from the set-up to the due instant; the service (and its sweep) starts then")
    parser.add_argument("--batch-size", type=int, default=2000, help="RETENTION_BATCH_SIZE")
    parser.add_argument("--arms", default="quiet,purge", help="which arms to run, in order: quiet, purge")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
