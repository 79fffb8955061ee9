"""A real HTTP server standing in for the EngageLab push API (`POST /v4/push`), on a loopback port.

It answers `{"request_id", "msg_id"}` and records every delivery with its arrival time. A push may ask
for misbehaviour through its `custom_args`, so each test scripts its own failures:
`{"standin": {"fail_times": 2, "status": 500}}` answers 500 to the first two attempts of that push (per
idempotency key), `"status": 429, "retry_after": "1"` rate-limits, `"stall": 5` sleeps before answering,
`"status": 400` with `fail_times` large rejects for good.

Besides the scripts, `Faults` makes a share of all pushes misbehave at random (the fault suite, bench/faults.py):
5xx answers, hangs past the sender's timeout (answered 200 afterwards: the push went out, the answer came
too late), connection resets (nothing delivered) and 429 with Retry-After. Each draw depends only on the
seed, the idempotency key and the attempt number, so a run is reproducible whatever the arrival order. A
push's own script, when it applies, wins over the random faults.

`/_summary` (counts) and `/_requests` (every request with its key, task tag, status and outcome) serve
processes that run the stand-in as its own process; `/_stats` is kept as the benchmarks use it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web


@dataclasses.dataclass(frozen=True)
class Delivery:
    received_at: float  # time.time() on arrival
    body: dict[str, Any]
    headers: dict[str, str]
    status: int  # 0: the connection was reset, no answer
    msg_id: str | None
    outcome: str = "ok"  # ok, scripted, error, hang (answered 200 after the hang), reset, throttled
    answered_at: float = dataclasses.field(default_factory=time.time)  # time.time() when answered (or reset)

    @property
    def cid(self) -> str:
        return self.body["body"]["options"]["cid"]

    @property
    def task(self) -> Any:
        """The tag a benchmark put in the push's custom_args ("task"), to tell pushes apart whatever their key."""
        custom = self.body.get("custom_args")
        return custom.get("task") if isinstance(custom, dict) else None


FAIL_STATUSES = (500, 502, 503)


@dataclasses.dataclass(frozen=True)
class Faults:
    """Shares of pushes that misbehave at random; the rest are answered normally."""

    fail_rate: float = 0.0  # answered 500, 502 or 503
    hang_rate: float = 0.0  # answered 200 only after hang_seconds (past the sender's timeout)
    reset_rate: float = 0.0  # connection reset after the request was read: nothing delivered
    throttle_rate: float = 0.0  # answered 429 with Retry-After
    seed: int = 0
    hang_seconds: float = 30.0
    retry_after: str = "1"

    def __post_init__(self) -> None:
        rates = (self.fail_rate, self.hang_rate, self.reset_rate, self.throttle_rate)
        if any(rate < 0 for rate in rates) or sum(rates) > 1:
            raise ValueError(f"fault rates must be >= 0 and add up to at most 1, got {rates}")

    @property
    def active(self) -> bool:
        return any((self.fail_rate, self.hang_rate, self.reset_rate, self.throttle_rate))

    def draw(self, cid: str, attempt: int) -> tuple[str, int]:
        """The fault for this attempt of this key ("ok" for none) and, for "error", its status."""
        rng = random.Random(f"{self.seed}:{cid}:{attempt}")
        point = rng.random()
        for fault, rate in (
            ("error", self.fail_rate),
            ("hang", self.hang_rate),
            ("reset", self.reset_rate),
            ("throttled", self.throttle_rate),
        ):
            if point < rate:
                return fault, rng.choice(FAIL_STATUSES)
            point -= rate
        return "ok", 200


class StandIn:
    def __init__(
        self,
        *,
        delay_seconds: float = 0.0,
        faults: Faults | None = None,
        msg_id_for: Callable[[int], str] | None = None,
    ) -> None:
        self.deliveries: list[Delivery] = []
        self.attempts: collections.Counter[str] = collections.Counter()
        self.arrived = 0  # requests received, answered or not yet
        self.in_progress = 0  # received and not answered yet
        self.last_arrival: float | None = None
        self.delivered_keys: set[str] = set()
        self.delay_seconds = delay_seconds
        self.faults = faults or Faults()
        self.msg_id_for = msg_id_for or str  # the msg_id of the nth successful push
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()
        self.url = ""

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=1024**2)
        app.router.add_post("/v4/push", self._push)
        app.router.add_get("/_stats", self._stats)
        app.router.add_get("/_summary", self._summary)
        app.router.add_get("/_requests", self._requests)
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

    async def _push(self, request: web.Request) -> web.StreamResponse:
        received_at = time.time()
        self.arrived += 1
        self.last_arrival = received_at
        self.in_progress += 1
        try:
            return await self._answer(request, received_at)
        finally:
            self.in_progress -= 1

    async def _answer(self, request: web.Request, received_at: float) -> web.StreamResponse:
        body = await request.json()
        cid = body.get("body", {}).get("options", {}).get("cid", "")
        self.attempts[cid] += 1
        script = body.get("custom_args", {}).get("standin", {}) if isinstance(body.get("custom_args"), dict) else {}
        status, msg_id, extra_headers, outcome = 200, None, {}, "ok"
        if isinstance(script.get("answer"), str) and script["answer"].isdigit():
            # Every attempt answered with this status: a string, so a push's parameters can script it per push.
            status, outcome = int(script["answer"]), "scripted"
        elif self.attempts[cid] <= script.get("fail_times", 0):
            if "stall" in script:
                await asyncio.sleep(script["stall"])
            status = script.get("status", 500)
            outcome = "scripted"
            if status == 429 and "retry_after" in script:
                extra_headers["Retry-After"] = script["retry_after"]
            if 300 <= status < 400:
                extra_headers["Location"] = script.get("location", "/v4/push")
        elif self.faults.active:
            outcome, fault_status = self.faults.draw(cid, self.attempts[cid])
            if outcome == "reset":
                self._reset_connection(request)
                self._record(Delivery(received_at, body, dict(request.headers), 0, None, outcome))
                return web.Response(status=200)  # never written: the transport is gone
            if outcome == "error":
                status = fault_status
            elif outcome == "throttled":
                status = 429
                extra_headers["Retry-After"] = self.faults.retry_after
            elif outcome == "hang":
                await asyncio.sleep(self.faults.hang_seconds)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if status == 200:
            msg_id = self.msg_id_for(next(self._ids))
            answer: dict[str, Any] = {"request_id": body.get("request_id", ""), "msg_id": msg_id}
        else:
            answer = {"error": {"code": 21000 + status, "message": f"stand-in answers {status}"}}
        if "pad_bytes" in script:  # an answer far larger than any push API's: the sender must not read it all
            answer["pad"] = "x" * int(script["pad_bytes"])
        self._record(Delivery(received_at, body, dict(request.headers), status, msg_id, outcome))
        return web.json_response(answer, status=status, headers=extra_headers, dumps=json.dumps)

    def _record(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if delivery.status == 200:
            self.delivered_keys.add(delivery.cid)
        self._arrived.set()

    @staticmethod
    def _reset_connection(request: web.Request) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0), as a crashing or overloaded proxy would."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

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

    async def _summary(self, request: web.Request) -> web.Response:
        """Counts only, cheap enough to poll: requests arrived, not yet answered, delivered, distinct keys."""
        return web.json_response(
            {
                "arrived": self.arrived,
                "in_progress": self.in_progress,
                "delivered": sum(1 for delivery in self.deliveries if delivery.status == 200),
                "keys": len(self.delivered_keys),
                "last_arrival": self.last_arrival,
            }
        )

    async def _requests(self, request: web.Request) -> web.Response:
        """Every answered request: [key, task tag, arrival, answer time, status (0: reset), outcome, msg_id]."""
        return web.json_response(
            {
                "requests": [
                    [d.cid, d.task, d.received_at, d.answered_at, d.status, d.outcome, d.msg_id]
                    for d in self.deliveries
                ]
            }
        )

    async def _reset(self, request: web.Request) -> web.Response:
        """Benchmarks measuring several schedulers in a row start each from an empty record."""
        self.deliveries.clear()
        self.attempts.clear()
        self.delivered_keys.clear()
        self.arrived = 0
        self.last_arrival = None
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
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of pushes answered 500/502/503")
    parser.add_argument("--hang-rate", type=float, default=0.0, help="share answered 200 only after --hang-seconds")
    parser.add_argument("--reset-rate", type=float, default=0.0, help="share whose connection is reset")
    parser.add_argument("--throttle-rate", type=float, default=0.0, help="share answered 429 with Retry-After")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--retry-after", default="1", help="the 429's Retry-After header")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    faults = Faults(
        fail_rate=args.fail_rate,
        hang_rate=args.hang_rate,
        reset_rate=args.reset_rate,
        throttle_rate=args.throttle_rate,
        seed=args.seed,
        hang_seconds=args.hang_seconds,
        retry_after=args.retry_after,
    )

    async def serve() -> None:
        standin = StandIn(delay_seconds=args.delay, faults=faults)
        await standin.start(args.port)
        print(f"stand-in on {standin.url}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
