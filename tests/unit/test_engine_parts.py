"""Engine parts that need no database: the clock and the supervisor."""

from __future__ import annotations

import asyncio
import datetime as dt

from service.engine.clock import Clock
from service.engine.supervisor import Supervisor

UTC = dt.timezone.utc


class SteppedClock(Clock):
    """A local clock that reads what the test sets."""

    def __init__(self, local: float) -> None:
        super().__init__()
        self.at = local

    def local(self) -> float:
        return self.at


def test_clock_takes_the_database_offset_from_a_fast_round_trip() -> None:
    clock = SteppedClock(1000.0)
    database = dt.datetime.fromtimestamp(995.005, UTC)  # the local clock is 5 s fast
    clock.observe(1000.0, database, 1000.01)
    assert abs(clock.offset - (-5.0)) < 1e-9
    assert abs(clock.now() - 995.0) < 1e-9
    assert abs(clock.seconds_until(dt.datetime.fromtimestamp(996.0, UTC)) - 1.0) < 1e-9


def test_clock_ignores_slow_round_trips_once_it_has_a_good_one() -> None:
    clock = SteppedClock(1000.0)
    clock.observe(1000.0, dt.datetime.fromtimestamp(995.005, UTC), 1000.01)
    clock.observe(1000.0, dt.datetime.fromtimestamp(1010.0, UTC), 1002.0)  # a 2 s round trip: tells little
    assert abs(clock.offset - (-5.0)) < 1e-9


def test_clock_without_samples_is_local_time() -> None:
    clock = SteppedClock(1234.5)
    assert clock.now() == 1234.5 and clock.offset == 0.0


async def test_supervisor_restarts_a_crashed_loop_and_reports_it_down_meanwhile() -> None:
    stopping = asyncio.Event()
    supervisor = Supervisor(stopping)
    runs = 0
    crashed = asyncio.Event()
    release = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            crashed.set()
            raise RuntimeError("boom")
        await release.wait()

    supervisor.spawn("recorder", loop)
    await asyncio.wait_for(crashed.wait(), 5)
    await asyncio.sleep(0)  # let the supervisor see the crash
    assert supervisor.down == frozenset({"recorder"})
    while runs < 2:
        await asyncio.sleep(0.01)
    assert supervisor.down == frozenset() and supervisor.restarts == {"recorder": 1}
    stopping.set()
    release.set()
    await supervisor.stop(["recorder"], 1.0)
