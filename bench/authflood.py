"""Open-loop load of requests with random app keys (Basic auth with keys no app has), as a credential-stuffing
client or a misconfigured fleet would send: each key is new, so no credentials cache can answer it.

    .venv/bin/python -m bench.authflood --url http://127.0.0.1:8080 --rate 1000 --seconds 30

Sends `--rate` requests a second (GET /v4/schedules) until `--seconds` pass or SIGTERM/SIGINT, with at most
`--concurrency` outstanding (a request that would exceed it is counted as skipped, never queued), then prints
one JSON object: sent, skipped, achieved rate, answers by status, latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import ipaddress
import json
import secrets
import signal
import statistics
import time
import urllib.parse

import aiohttp


def _random_basic() -> str:
    pair = f"{secrets.token_hex(12)}:{secrets.token_urlsafe(24)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


async def flood(url: str, rate: float, seconds: float, concurrency: int) -> dict[str, object]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    statuses: collections.Counter[str] = collections.Counter()
    latencies_ms: list[float] = []
    outstanding: set[asyncio.Task[None]] = set()
    target = url.rstrip("/") + "/v4/schedules"

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), timeout=aiohttp.ClientTimeout(total=10)
    ) as session:

        async def one() -> None:
            started = time.perf_counter()
            try:
                async with session.get(target, headers={"Authorization": _random_basic()}) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                statuses[type(exc).__name__] += 1
            latencies_ms.append((time.perf_counter() - started) * 1000)

        print(json.dumps({"started": time.time()}), flush=True)  # the caller waits for this line
        started = loop.time()
        sent = skipped = 0
        while not stop.is_set() and loop.time() - started < seconds:
            due = int((loop.time() - started) * rate)
            while sent + skipped < due:
                if len(outstanding) >= concurrency:
                    skipped += 1
                    continue
                task = asyncio.create_task(one())
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
                sent += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.002)
        elapsed = loop.time() - started
        if outstanding:
            await asyncio.wait(list(outstanding), timeout=10)
    cuts = statistics.quantiles(latencies_ms, n=100) if len(latencies_ms) > 1 else [0.0] * 99
    return {
        "sent": sent,
        "skipped": skipped,
        "seconds": round(elapsed, 2),
        "achieved_rate": round(sent / elapsed, 1) if elapsed else 0.0,
        "statuses": dict(statuses),
        "latency_ms": {"p50": round(cuts[49], 2), "p99": round(cuts[98], 2)},
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the service's base URL (loopback only)")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="the longest it runs")
    parser.add_argument("--concurrency", type=int, default=100, help="most requests outstanding")
    args = parser.parse_args()
    host = urllib.parse.urlsplit(args.url).hostname or ""
    if host != "localhost" and not (_is_ip(host) and ipaddress.ip_address(host).is_loopback):
        parser.error(f"--url must be a loopback address (127.0.0.0/8, ::1, localhost), not {host!r}")
    print(json.dumps(asyncio.run(flood(args.url, args.rate, args.seconds, args.concurrency))), flush=True)


if __name__ == "__main__":
    main()
