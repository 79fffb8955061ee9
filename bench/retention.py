"""Retention under load: a burst of N tasks due at one second while the retention sweep purges a million old
runs, next to the same burst with the same old rows and no purge.

Each arm starts its own processes (harness.Bench: a fresh embedded PostgreSQL, the stand-in, the service with
RETENTION_DAYS=0, so its own sweep keeps everything). The old rows are written with generate_series: tasks of
which half expired long ago (their runs go with them, sql/0007 purge_ended_schedules) and half are active
periodical tasks (their old runs go by age, purge_old_runs), `--runs-per-task` runs each, all ended 100 to 190
days ago. In the `purge` arm this process runs the engine's own retention part (service.engine.retention) on
a RunQueue of its own against the same database, from `--purge-lead` seconds before the due instant until
nothing old is left, timing every transaction; the statements are the ones the engine runs.

    .venv/bin/python -m bench.retention --old-runs 1000000 --count 10000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from typing import Any

import asyncpg

from bench.harness import UTC, Bench, machine, percentiles
from service.engine.retention import Retention
from service.store.runqueue import RunQueue
from service.store.stores import Stores
from tests.bulk import bulk_schedules

RETENTION = dt.timedelta(days=90)


class TimedQueue(RunQueue):
    """The engine's RunQueue, timing each purge transaction (one statement each)."""

    def __init__(self, queue: RunQueue) -> None:
        self.__dict__.update(queue.__dict__)
        self.transactions: list[tuple[float, int]] = []  # (seconds, rows)

    async def purge_ended_schedules(self, retention: dt.timedelta, tasks: int, runs: int) -> tuple[int, int]:
        started = time.perf_counter()
        purged = await super().purge_ended_schedules(retention, tasks, runs)
        self.transactions.append((time.perf_counter() - started, sum(purged)))
        return purged

    async def purge_old_runs(self, retention: dt.timedelta, limit: int) -> int:
        started = time.perf_counter()
        purged = await super().purge_old_runs(retention, limit)
        self.transactions.append((time.perf_counter() - started, purged))
        return purged


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
        await bench.start_service(RETENTION_DAYS="0")
        app = await bench.new_app()
        old = await old_rows(bench.dsn, app.app.app_key, args.old_runs, args.runs_per_task)
        due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=args.lead)
        await bulk_schedules(bench.dsn, app.app.app_key, due, args.count)
        if dt.datetime.now(UTC) >= due - dt.timedelta(seconds=args.purge_lead):
            raise SystemExit("setting up took longer than --lead; raise it")
        stores = await Stores.open(bench.dsn, api_pool_size=1, engine_pool_size=2)
        try:
            assert stores.runs is not None
            queue = TimedQueue(stores.runs)
            retention = Retention(queue, retention=RETENTION, batch_size=args.batch_size,
                                  interval=dt.timedelta(minutes=1))
            await asyncio.sleep(max(0.0, due.timestamp() - args.purge_lead - time.time()))
            purging = asyncio.create_task(retention.sweep()) if purge else None
            purge_started = time.time()
            delivered: list[Any] = []
            while time.time() < due.timestamp() + 120:
                await asyncio.sleep(0.5)
                delivered = await bench.standin_deliveries()
                if len({cid for cid, _, _ in delivered}) >= args.count:
                    break
            purge_report = None
            if purging is not None:
                report = await purging
                seconds = [elapsed * 1000 for elapsed, _ in queue.transactions]
                purge_report = {
                    "rows": report.schedules + report.runs,
                    "tasks": report.schedules,
                    "runs": report.runs,
                    "seconds": round(report.seconds, 1),
                    "rows_per_second": round((report.schedules + report.runs) / report.seconds),
                    "transactions": len(seconds),
                    "transaction_ms": {key: round(value, 1) for key, value in percentiles(seconds).items()},
                    "started_before_due_s": round(due.timestamp() - purge_started, 2),
                }
        finally:
            await stores.close()
    arrivals = sorted(received_at for _, received_at, _ in delivered)
    return {
        "arm": "purge" if purge else "quiet",
        "old_rows": old,
        "delivered": len(arrivals),
        "distinct_keys": len({cid for cid, _, _ in delivered}),
        "last_delivery_after_due_s": round(arrivals[-1] - due.timestamp(), 3) if arrivals else None,
        "lateness_ms": {key: round(value, 1) for key, value in
                        percentiles([(arrival - due.timestamp()) * 1000 for arrival in arrivals]).items()},
        "purge": purge_report,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    arms = [await arm(name == "purge", args) for name in args.arms.split(",")]
    return {"benchmark": "retention", "machine": machine(), "burst": args.count, "batch_size": args.batch_size,
            "arms": arms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-runs", type=int, default=1_000_000)
    parser.add_argument("--runs-per-task", type=int, default=100)
    parser.add_argument("--count", type=int, default=10_000, help="tasks of the burst, due at one second")
    parser.add_argument("--lead", type=float, default=10.0, help="seconds from the old rows' set-up to the due instant")
    parser.add_argument("--purge-lead", type=float, default=2.0, help="the purge starts this long before the due instant")
    parser.add_argument("--batch-size", type=int, default=2000, help="RETENTION_BATCH_SIZE")
    parser.add_argument("--arms", default="quiet,purge", help="which arms to run, in order: quiet, purge")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
