"""The push client's CPU per push: N POSTs to the stand-in (its own process) at 200 at once, through aiohttp's
ClientSession as the service sent pushes before (commit dbe3ec6), and through service.engine.pushclient, in
alternating rounds in this one process. Reports this process's CPU seconds and the wall time of each round.

    .venv/bin/python -m bench.push_client --count 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp

from bench.harness import _wait_http, free_port, machine
from service.domain import wirejson
from service.engine import pushclient

CONCURRENCY = 200
MAX_ANSWER_BYTES = 64 * 1024


def _push(key: str) -> dict[str, Any]:
    return {"to": "all", "body": {"platform": "all", "notification": {"alert": "burst"}, "options": {"cid": key}}}


async def _client_session(url: str, keys: list[str]) -> None:
    """As service.engine.backends.HttpBackend did before dbe3ec6."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=10),
        json_serialize=lambda value: json.dumps(value, ensure_ascii=False, separators=(",", ":")),
    )

    async def one(key: str) -> None:
        async with session.post(url, json=_push(key), headers={"Content-Type": "application/json"},
                                allow_redirects=False) as response:
            raw = await response.content.read(MAX_ANSWER_BYTES)
            json.loads(raw.decode("utf-8", "replace"))

    try:
        await asyncio.gather(*(one(key) for key in keys))
    finally:
        await session.close()


async def _push_client(url: str, keys: list[str]) -> None:
    client = pushclient.PushClient(url, limit=CONCURRENCY)

    async def one(key: str) -> None:
        answer = await client.post(wirejson.dumps(_push(key)), [], timeout=10, max_answer_bytes=MAX_ANSWER_BYTES)
        wirejson.loads(answer.body.decode("utf-8", "replace"))

    try:
        await asyncio.gather(*(one(key) for key in keys))
    finally:
        await client.close()


async def run(count: int, rounds: int) -> list[dict[str, Any]]:
    port = free_port()
    standin = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.standin", "--port", str(port),
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = []
    try:
        base = f"http://127.0.0.1:{port}"
        await _wait_http(base + "/_stats")
        for _ in range(rounds):
            for name, arm in (("aiohttp ClientSession", _client_session), ("service.engine.pushclient", _push_client)):
                keys = [uuid.uuid4().hex for _ in range(count)]
                cpu, wall = time.process_time(), time.perf_counter()
                await arm(base + "/v4/push", keys)
                results.append({"client": name, "posts": count, "cpu_s": round(time.process_time() - cpu, 2),
                                "wall_s": round(time.perf_counter() - wall, 2)})
    finally:
        standin.terminate()
        await standin.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps({"benchmark": "push_client", "machine": machine(),
                      "results": asyncio.run(run(args.count, args.rounds))}, indent=2))


if __name__ == "__main__":
    main()
