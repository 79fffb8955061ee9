"""API throughput and latency with wrk on loopback (it shares the machine with the service):
create, detail GET and list, and the ceiling: a bare aiohttp handler doing one asyncpg query.

    apt-get install wrk      # Debian's package
    .venv/bin/python -m bench.api --seconds 10 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import aiohttp

from bench.harness import UTC, Bench, _wait_http, free_port, machine

# Creates of one app are serialized by its lock (the cap must hold); real load comes from many apps.
TENANTS = 50


def wrk(
    url: str,
    seconds: int,
    connections: int,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
    rotate_auth: list[str] | None = None,
) -> dict[str, Any]:
    """Run wrk; `rotate_auth` spreads requests over several apps' Authorization headers, round robin."""
    script = pathlib.Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(body)}")
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if rotate_auth:
        lines.append("auths = {" + ", ".join(json.dumps(value) for value in rotate_auth) + "}")
        lines.append("counter = 0")
        lines.append(
            "request = function() counter = counter + 1; "
            'wrk.headers["Authorization"] = auths[(counter % #auths) + 1]; return wrk.format() end'
        )
    # Count non-2xx answers, so a fast stream of errors cannot pass for throughput.
    lines.append("errors = 0\nresponse = function(status, headers, body) if status >= 300 then errors = errors + 1 end end")
    script.write_text("\n".join(lines))
    output = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    script.unlink()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", output, re.MULTILINE))
    return {"requests_per_second": rate, "p50": latency.get("50"), "p99": latency.get("99"), "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


async def run(seconds: int, connections: int, only: str | None, profile: str | None) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    async with Bench() as bench:
        await bench.start_service()
        app = await bench.new_app(max_schedules=10_000_000)
        auth = "Basic " + base64.b64encode(f"{app.app.app_key}:{app.master_secret}".encode()).decode()
        when = (dt.datetime.now(UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
        body = json.dumps({
            "name": "bench push", "enabled": True,
            "trigger": {"single": {"time": when, "zone_type": 1}},
            "push": {"to": {"registration_id": ["1a0018970ab49abda3e"]}, "body": {"platform": "all", "notification": {"alert": "hi"}}},
        })
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        async with aiohttp.ClientSession(headers=headers) as session:
            for _ in range(50):
                async with session.post(bench.service_url + "/v4/schedules", data=body) as response:
                    schedule_id = (await response.json())["schedule_id"]
        tenants = [await bench.new_app(max_schedules=10_000_000) for _ in range(TENANTS)]
        tenant_auth = ["Basic " + base64.b64encode(f"{t.app.app_key}:{t.master_secret}".encode()).decode() for t in tenants]
        results: dict[str, Any] = {}
        loads = {
            # Reads first, on an app holding 50 tasks; the creates below add thousands.
            "detail": (f"{bench.service_url}/v4/schedules/{schedule_id}", "GET", None, {"Authorization": auth}, None),
            "list": (bench.service_url + "/v4/schedules?page=1", "GET", None, {"Authorization": auth}, None),
            f"create, {TENANTS} apps": (bench.service_url + "/v4/schedules", "POST", body, headers, tenant_auth),
            "create, one app": (bench.service_url + "/v4/schedules", "POST", body, headers, None),
        }
        for name, (url, method, load_body, load_headers, rotate) in loads.items():
            if only and not name.startswith(only):
                continue
            if profile:
                bench.profile_service(profile, seconds)
                profile = None  # the first load measured only
            before = bench.cpu_seconds()
            results[name] = await asyncio.to_thread(
                wrk, url, seconds, connections, method, load_body, load_headers, rotate
            )
            after = bench.cpu_seconds()
            results[name]["cpu_seconds"] = {part: round(after[part] - before[part], 2) for part in after}
        if not only or "ceiling".startswith(only):
            bare_port = free_port()
            bare = subprocess.Popen([sys.executable, "-m", "bench.bare_server", "--port", str(bare_port), "--dsn", bench.dsn])  # noqa: ASYNC220 -- a spawn, not a wait
            try:
                await _wait_http(f"http://127.0.0.1:{bare_port}/bare/{schedule_id}")
                results["ceiling: bare aiohttp + one asyncpg query"] = await asyncio.to_thread(
                    wrk, f"http://127.0.0.1:{bare_port}/bare/{schedule_id}", seconds, connections
                )
            finally:
                bare.terminate()
                bare.wait(timeout=10)
    return {"benchmark": "api", "machine": machine(), "seconds": seconds, "connections": connections, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", help="measure only the loads whose name starts with this (detail, list, create, ceiling)")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the service during the first load measured")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.seconds, args.connections, args.only, args.profile)), indent=2))


if __name__ == "__main__":
    main()
