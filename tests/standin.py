"""A real HTTP server standing in for the EngageLab push API (`POST /v4/push`), on a loopback port.

It answers `{"request_id", "msg_id"}` and records every delivery with its arrival time. A push may ask
for misbehaviour through its `custom_args`, so each test scripts its own failures:
`{"standin": {"fail_times": 2, "status": 500}}` answers 500 to the first two attempts of that push (per
idempotency key), `"status": 429, "retry_after": "1"` rate-limits, `"stall": 5` sleeps before answering,
`"status": 400` with `fail_times` large rejects for good.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web


@dataclasses.dataclass(frozen=True)
class Delivery:
    received_at: float  # time.time() on arrival
    body: dict[str, Any]
    headers: dict[str, str]
    status: int
    msg_id: str | None

    @property
    def cid(self) -> str:
        return self.body["body"]["options"]["cid"]


class StandIn:
    def __init__(self, *, delay_seconds: float = 0.0, msg_id_for: Callable[[int], str] | None = None) -> None:
        self.deliveries: list[Delivery] = []
        self.attempts: collections.Counter[str] = collections.Counter()
        self.arrived = 0  # requests received, answered or not yet
        self.delay_seconds = delay_seconds
        self.msg_id_for = msg_id_for or str  # the msg_id of the nth successful push
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()
        self.url = ""

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=1024**2)
        app.router.add_post("/v4/push", self._push)
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/_reset", self._reset)
        # Stopping cuts stalled answers at once: a test that stops the stand-in waits for no stall.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _push(self, request: web.Request) -> web.Response:
        received_at = time.time()
        self.arrived += 1
        body = await request.json()
        cid = body.get("body", {}).get("options", {}).get("cid", "")
        self.attempts[cid] += 1
        script = body.get("custom_args", {}).get("standin", {}) if isinstance(body.get("custom_args"), dict) else {}
        status, msg_id, extra_headers = 200, None, {}
        if self.attempts[cid] <= script.get("fail_times", 0):
            if "stall" in script:
                await asyncio.sleep(script["stall"])
            status = script.get("status", 500)
            if status == 429 and "retry_after" in script:
                extra_headers["Retry-After"] = script["retry_after"]
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if status == 200:
            msg_id = self.msg_id_for(next(self._ids))
            answer: dict[str, Any] = {"request_id": body.get("request_id", ""), "msg_id": msg_id}
        else:
            answer = {"error": {"code": 21000 + status, "message": f"stand-in answers {status}"}}
        self.deliveries.append(Delivery(received_at, body, dict(request.headers), status, msg_id))
        self._arrived.set()
        return web.json_response(answer, status=status, headers=extra_headers, dumps=json.dumps)

    async def _stats(self, request: web.Request) -> web.Response:
        """For benchmarks in another process: every successful delivery's key, arrival time and offset."""
        delivered = self.delivered()
        return web.json_response(
            {
                "arrived": self.arrived,
                "delivered": [
                    [d.cid, d.received_at, d.headers.get("X-Push-Utc-Offset")] for d in delivered
                ],
            }
        )

    async def _reset(self, request: web.Request) -> web.Response:
        """Benchmarks measuring several schedulers in a row start each from an empty record."""
        self.deliveries.clear()
        self.attempts.clear()
        self.arrived = 0
        return web.json_response({"reset": True})

    def delivered(self) -> list[Delivery]:
        """Deliveries answered 200 (the pushes that went out)."""
        return [delivery for delivery in self.deliveries if delivery.status == 200]

    async def wait_for(self, count: int, timeout: float) -> list[Delivery]:
        """Wait until `count` successful deliveries arrived (or the timeout); returns them."""
        deadline = time.monotonic() + timeout
        while len(self.delivered()) < count and time.monotonic() < deadline:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        return self.delivered()


def main() -> None:
    """`python -m tests.standin --port 9000`: serve until interrupted (benchmarks run it as its own process)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()

    async def serve() -> None:
        standin = StandIn(delay_seconds=args.delay)
        await standin.start(args.port)
        print(f"stand-in on {standin.url}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
