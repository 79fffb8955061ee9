"""Dispatch lateness of isolated tasks: one task per second, created through the API, http backend to a
loopback stand-in; lateness = stand-in receipt - due instant.

    .venv/bin/python -m bench.lateness --count 120
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import pathlib

import aiohttp

from bench.harness import UTC, Bench, machine, percentiles


async def run(count: int, service_log: str | None) -> dict[str, object]:
    async with Bench() as bench:
        if service_log:  # every dispatch line, with its lateness as the service measured it
            await bench.start_service(pathlib.Path(service_log), LOG_LEVEL="INFO")
        else:
            await bench.start_service()
        app = await bench.new_app()
        auth = base64.b64encode(f"{app.app.app_key}:{app.master_secret}".encode()).decode()
        first_due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
        due_by_name = {}
        async with aiohttp.ClientSession(headers={"Authorization": f"Basic {auth}"}) as session:
            for n in range(count):
                due = first_due + dt.timedelta(seconds=n)
                name = f"isolated_{n}"
                body = {
                    "name": name,
                    "enabled": True,
                    "trigger": {"single": {"time": due.strftime("%Y-%m-%d %H:%M:%S"), "zone_type": 1}},
                    "push": {"to": "all", "body": {"platform": "all", "notification": {"alert": name}}, "request_id": name},
                }
                async with session.post(bench.service_url + "/v4/schedules", json=body) as response:
                    assert response.status == 200, await response.text()
                due_by_name[name] = due
        await asyncio.sleep((first_due - dt.datetime.now(UTC)).total_seconds() + count + 2)
        async with aiohttp.ClientSession() as session, session.get(bench.standin_url + "/_stats") as response:
            stats = await response.json()
        delivered = stats["delivered"]
    # The stand-in's stats carry key and arrival time; match arrivals to due instants in order of due.
    arrivals = sorted(received_at for _, received_at, _ in delivered)
    dues = sorted(due.timestamp() for due in due_by_name.values())
    lateness_ms = [(arrival - due) * 1000 for arrival, due in zip(arrivals, dues, strict=False)]
    return {"benchmark": "lateness", "machine": machine(), "tasks": count, "delivered": len(arrivals), "lateness_ms": percentiles(lateness_ms), "worst": sorted((round(ms, 1), index) for index, ms in enumerate(lateness_ms))[-5:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--service-log", metavar="FILE", help="the service's log, at INFO, goes to FILE")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.count, args.service_log)), indent=2))


if __name__ == "__main__":
    main()
