"""The real `python -m service` process killed or stopped in the middle of a burst: nothing is lost."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from service import admin
from service.store.stores import Stores
from tests.bulk import bulk_schedules
from tests.integration.conftest import fetch, next_whole_second, runs_settled
from tests.integration.test_cli_and_serve import cli_env, free_port
from tests.standin import StandIn
from tests.waiting import eventually

ROOT = pathlib.Path(__file__).resolve().parents[2]
BURST = 2000


@pytest.fixture
async def slow_standin() -> AsyncIterator[StandIn]:
    """20 ms per push and 20 sends at a time: a 2000-push burst takes about 2 s, long enough to kill into."""
    server = StandIn(delay_seconds=0.02)
    await server.start()
    yield server
    await server.stop()


async def spawn(
    database_url: str, push_api_url: str, data_dir: pathlib.Path, **settings: str
) -> asyncio.subprocess.Process:
    values = {
        "SEND_CONCURRENCY": "20",
        "SEND_TIMEOUT_SECONDS": "1",
        "LEASE_SECONDS": "2",
        "SHUTDOWN_TIMEOUT_SECONDS": "0.5",
        "LOG_LEVEL": "WARNING",
    }
    values.update(settings)
    env = cli_env(
        DATABASE_URL=database_url, DATA_DIR=str(data_dir), PORT=str(free_port()), PUSH_API_URL=push_api_url,
        PUSH_REQUIRE_CREDENTIALS="false", **values
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def burst_app(database_url: str) -> str:
    stores = await Stores.open(database_url, api_pool_size=1)
    try:
        app = await admin.register_app(stores.schedules, "burst", "UTC", 10_000)
    finally:
        await stores.close()
    return app.app.app_key


async def test_sigkill_mid_burst_loses_nothing(database_url: str, slow_standin: StandIn, tmp_path: pathlib.Path) -> None:
    await bulk_schedules(database_url, await burst_app(database_url), next_whole_second(2.5), BURST)
    first = await spawn(database_url, slow_standin.url, tmp_path)
    await slow_standin.wait_for(BURST // 4, timeout=30)
    first.kill()  # SIGKILL: no shutdown code runs
    await first.wait()
    delivered_before = len(slow_standin.delivered())
    assert delivered_before < BURST, "the burst finished before the kill; the test proves nothing"

    second = await spawn(database_url, slow_standin.url, tmp_path)
    try:
        await slow_standin.wait_for(BURST, timeout=60)

        async def every_run_delivered() -> bool:
            return len({d.cid for d in slow_standin.delivered()}) >= BURST

        await eventually(every_run_delivered, timeout=30, what=f"{BURST} distinct runs delivered")
        await eventually(lambda: runs_settled(database_url, BURST), what="every run's outcome recorded")
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), timeout=30) == 0

    runs = await fetch(database_url, "SELECT id, state, msg_id FROM runs")
    assert len(runs) == BURST  # each task planned exactly once
    assert {row["state"] for row in runs} == {"sent"}
    delivered_keys = {d.cid for d in slow_standin.delivered()}
    assert delivered_keys == {row["id"].hex for row in runs}  # every run arrived, under its own key
    resent = len(slow_standin.delivered()) - BURST
    # Only the sends in flight when the process died can arrive twice, and they carry the same key.
    assert 0 <= resent <= 20 + 20, f"{resent} duplicates"


async def test_sigterm_mid_burst_exits_cleanly_and_hands_back_sends(database_url: str, tmp_path: pathlib.Path) -> None:
    stalling = StandIn(delay_seconds=5.0)  # every send outlasts the shutdown timeout
    await stalling.start()
    try:
        await bulk_schedules(database_url, await burst_app(database_url), next_whole_second(1.5), 50)
        process = await spawn(database_url, stalling.url, tmp_path, SEND_TIMEOUT_SECONDS="10")

        async def sends_in_flight() -> bool:
            return stalling.arrived >= 20

        await eventually(sends_in_flight, timeout=20, what="20 sends in flight")
        # Proves a negative, so a bounded wait: no 21st send starts while the first 20 stall.
        await asyncio.sleep(0.3)
        # 20 sends in flight (the concurrency), none answered; the other 30 runs wait for a slot.
        assert (stalling.arrived, len(stalling.deliveries)) == (20, 0)
        os.kill(process.pid, signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
        assert stalling.arrived == 20  # the waiting 30 were never sent
    finally:
        await stalling.stop()
    states = await fetch(
        database_url,
        "SELECT state, count(*) AS n, bool_and(coalesce(next_attempt_at, lease_until) <= clock_timestamp()) AS at_once "
        "FROM runs GROUP BY state ORDER BY state",
    )
    # The 20 interrupted sends and the 20 leased runs queued behind them were handed back as pending; the 10 never
    # leased (the sender leases at most twice its concurrency) were handed back planned; both for any replica to
    # take at once, none left leased.
    assert [(row["state"], row["n"], row["at_once"]) for row in states] == [("pending", 40, True), ("planned", 10, True)]
