"""Runs a caller triggers (issue 13), through the real service process to a loopback stand-in push API:

- run now, one push each, `--count` of them 100 ms apart: the POST's answer time (202), and the time from the
  POST to the push's arrival at the stand-in;
- webhooks (fire and forget), the same way;
- one run of `--sets` parameter sets: the POST's answer time (every set checked against the push rules), the
  time until the last push arrived, and until its status URL answered 200.

    .venv/bin/python -m bench.triggered --count 200 --sets 1000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from typing import Any

import aiohttp

from bench.harness import Bench, machine, percentiles

PUSH = {
    "to": {"alias": ["{{user}}"]},
    "body": {"platform": "all", "notification": {"alert": "Hello {{user}}, order {{order}} has shipped"}},
}
SPACING_SECONDS = 0.1


async def _delivered(session: aiohttp.ClientSession, standin_url: str) -> int:
    async with session.get(standin_url + "/_summary") as response:
        count: int = (await response.json())["delivered"]
        return count


async def _one_push_each(
    session: aiohttp.ClientSession, bench: Bench, url: str, count: int, headers: dict[str, str]
) -> dict[str, Any]:
    """`count` POSTs, SPACING_SECONDS apart: answer times, and POST-to-arrival (arrivals matched in order)."""
    before = len(await bench.standin_deliveries())
    answered_ms, posted_at = [], []
    for number in range(count):
        started = time.time()
        async with session.post(url, json={"QueryParameters": {"order": str(number)}}, headers=headers) as response:
            assert response.status in (200, 202), await response.text()
        answered_ms.append((time.time() - started) * 1000)
        posted_at.append(started)
        await asyncio.sleep(SPACING_SECONDS)
    for _ in range(600):  # at most 30 s for the last push to arrive
        if await _delivered(session, bench.standin_url) >= before + count:
            break
        await asyncio.sleep(0.05)
    arrivals = sorted(received_at for _, received_at, _ in (await bench.standin_deliveries()))[before:]
    to_arrival_ms = [(arrival - posted) * 1000 for arrival, posted in zip(arrivals, posted_at, strict=False)]
    return {
        "runs": count,
        "delivered": len(arrivals),
        "answer_ms": percentiles(answered_ms),
        "post_to_arrival_ms": percentiles(to_arrival_ms),
    }


async def _one_run_of_many(
    session: aiohttp.ClientSession, bench: Bench, schedule_id: str, sets: int, headers: dict[str, str]
) -> dict[str, Any]:
    before = await _delivered(session, bench.standin_url)
    body = {"QueryParameters": [{"user": f"user{number}", "order": str(number)} for number in range(sets)]}
    started = time.monotonic()
    async with session.post(
        f"{bench.service_url}/v4/schedules/{schedule_id}/run", json=body, headers=headers
    ) as response:
        assert response.status == 202, await response.text()
        location = response.headers["Location"]
    answered = time.monotonic()
    last_arrival = ended = None
    while ended is None and time.monotonic() - started < 120:
        if last_arrival is None and await _delivered(session, bench.standin_url) >= before + sets:
            last_arrival = time.monotonic()
        async with session.get(bench.service_url + location, headers=headers) as response:
            if response.status == 200:
                ended = time.monotonic()
                outcome = await response.json()
        await asyncio.sleep(0.02)
    assert ended is not None and outcome["status"] == "succeeded", outcome
    last_arrival = last_arrival or ended
    return {
        "sets": sets,
        "answer_ms": round((answered - started) * 1000, 1),
        "post_to_last_arrival_s": round(last_arrival - started, 3),
        "post_to_status_200_s": round(ended - started, 3),
    }


async def run(count: int, sets: int) -> dict[str, Any]:
    async with Bench() as bench:
        await bench.start_service()
        app = await bench.new_app()
        auth = base64.b64encode(f"{app.app.app_key}:{app.master_secret}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}"}
        async with aiohttp.ClientSession() as session:
            body = {
                "name": "bench_triggered",
                "enabled": True,
                "trigger": {"cron": {"expression": "0 9 1 1 *"}},  # once a year: nothing scheduled meanwhile
                "push": PUSH,
                "params": {"user": "everyone", "order": "0"},
            }
            async with session.post(bench.service_url + "/v4/schedules", json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                schedule_id = (await response.json())["schedule_id"]
            async with session.post(
                f"{bench.service_url}/v4/schedules/{schedule_id}/webhook", headers=headers
            ) as response:
                hook_url = bench.service_url + (await response.json())["url"]
            run_now = await _one_push_each(
                session, bench, f"{bench.service_url}/v4/schedules/{schedule_id}/run", count, headers
            )
            # Fire and forget: no Basic auth, the token is the credential.
            webhook = await _one_push_each(session, bench, hook_url, min(count, 60), {})
            batch = await _one_run_of_many(session, bench, schedule_id, sets, headers)
    return {
        "benchmark": "triggered runs",
        "machine": machine(),
        "run_now": run_now,
        "webhook": webhook,
        "one_run_of_many_sets": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="single-push runs (webhooks: at most 60, the rate)")
    parser.add_argument("--sets", type=int, default=1000, help="parameter sets of the one large run (1..1000)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.count, args.sets)), indent=2))


if __name__ == "__main__":
    main()
