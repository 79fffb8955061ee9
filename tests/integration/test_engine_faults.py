"""The engine's promise under faults, one defect each (issue "Exactly once and on time, whatever breaks"):
every test here failed on the engine before the rewrite (service/engine/ before sql/0005).

The database and the push API are real; faults are injected by a RunQueue that raises where told (the real
store underneath does the work), by a stand-in that answers slowly or with text PostgreSQL cannot store, and
by rows put where a crashed replica would have left them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import pathlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from service import admin
from service import app as app_module
from service.api import keys
from service.app import create_app, engine_config, make_backend
from service.domain import credentials, dispatch, errors, types
from service.engine import backends, dispatcher
from service.engine.ahead import PlannedAhead
from service.engine.clock import Clock
from service.engine.planner import Planner
from service.engine.sender import Sender
from service.engine.waker import Waker
from service.settings import Settings
from service.store.runqueue import RunQueue
from service.store.stores import Stores
from tests.bulk import bulk_schedules
from tests.integration.conftest import engine_settings, fetch, next_whole_second, start_service
from tests.integration.dbproxy import DatabaseProxy
from tests.standin import StandIn
from tests.waiting import eventually

UTC = dt.timezone.utc
# Plans in these tests lease nothing themselves: every run is 'planned', as an engine with no free place plans.
NO_LEASE = types.PlanLease(dt.timedelta(seconds=60), 0, uuid.uuid4())


class FaultyQueue(RunQueue):
    """The real run queue, raising RuntimeError on the next `faults[name]` calls of method `name`."""

    def __init__(self, real: RunQueue, faults: dict[str, int]) -> None:
        self.__dict__.update(real.__dict__)
        self.faults = dict(faults)
        self.raised: dict[str, int] = {}

    def _maybe_fail(self, name: str) -> None:
        if self.faults.get(name, 0) > 0:
            self.faults[name] -= 1
            self.raised[name] = self.raised.get(name, 0) + 1
            raise RuntimeError(f"injected fault in {name}")

    async def record_results(self, results: Any) -> list[types.DisabledByFailures]:
        self._maybe_fail("record_results")
        return await super().record_results(results)

    async def claim_planned(self, run_ids: Any, lease: dt.timedelta, token: uuid.UUID) -> dict[uuid.UUID, int]:
        self._maybe_fail("claim_planned")
        return await super().claim_planned(run_ids, lease, token)


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    opened = await Stores.open(database_url, api_pool_size=2, engine_pool_size=8)
    yield opened
    await opened.close()


@contextlib.asynccontextmanager
async def running(
    queue: RunQueue, settings: Settings, config: dispatcher.EngineConfig | None = None, clock: Clock | None = None
) -> AsyncIterator[dispatcher.Engine]:
    """An engine on `queue` with `settings`, started for the block and stopped after it."""
    engine = dispatcher.Engine(queue, make_backend(settings), config or engine_config(settings), clock=clock)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


@contextlib.asynccontextmanager
async def standing_in(standin: StandIn) -> AsyncIterator[StandIn]:
    """A stand-in push API of its own (a slow, hanging or hostile one), serving for the block."""
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


async def _all_sent(database_url: str, count: int, timeout: float = 15) -> None:
    await eventually(lambda: _states(database_url), f"all {count} runs recorded sent",
                     until=lambda states: states == {"sent": count}, timeout=timeout)


async def _app_key(stores: Stores) -> str:
    return (await admin.register_app(stores.schedules, "faults", "UTC", 100_000)).app.app_key


async def _states(database_url: str) -> dict[str, int]:
    rows = await fetch(database_url, "SELECT state, count(*) AS n FROM runs GROUP BY state")
    return {row["state"]: row["n"] for row in rows}


async def test_an_exception_in_the_recorder_and_in_the_fire_loop_loses_nothing(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, stores: Stores
) -> None:
    """Defect 1: a loop that raised stayed dead, with its batch, while /readyz stayed green."""
    count = 40
    assert stores.runs is not None
    queue = FaultyQueue(stores.runs, {"record_results": 2, "claim_planned": 1})
    await bulk_schedules(database_url, await _app_key(stores), next_whole_second(1.5), count)
    async with running(queue, engine_settings(database_url, tmp_path, standin.url)) as engine:
        await eventually(lambda: queue.raised.get("claim_planned") == 1, "the fire loop's claim raised")
        await eventually(lambda: engine.problem() is not None or engine.supervisor.restarts.get("fire"),
                         "the crashed loop is reported down")
        await _all_sent(database_url, count, timeout=30)
    assert queue.raised == {"record_results": 2, "claim_planned": 1}
    assert engine.supervisor.restarts == {"fire": 1}  # the recorder kept its batch and tried again instead
    assert engine.problem() is None
    # Nothing was lost and nothing was sent twice: the failed batch was kept, the fire loop's batch held again.
    assert len(standin.deliveries) == count and len({delivery.cid for delivery in standin.delivered()}) == count


async def test_a_crashed_loop_fails_readiness_until_it_is_back(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    service = await start_service(engine_settings(database_url, tmp_path, standin.url), aiohttp_server, session)
    async with session.get(service.base_url + "/readyz") as response:
        assert response.status == 200
    engine = service.app[app_module.ENGINE]
    assert engine.problem in service.app[keys.HEALTH_CHECKS]  # what the supervisor reports reaches /readyz
    down = ["recorder"]
    service.app[keys.HEALTH_CHECKS].append(lambda: f"engine loop down: {down[0]}" if down else None)
    async with session.get(service.base_url + "/readyz") as response:
        assert (response.status, (await response.json())["status"]) == (503, "engine loop down: recorder")
    down.clear()  # the loop is back
    async with session.get(service.base_url + "/readyz") as response:
        assert response.status == 200


async def test_text_from_the_push_api_that_postgresql_cannot_store_is_recorded(
    database_url: str, tmp_path: pathlib.Path, stores: Stores
) -> None:
    """Defect 1: a msg_id with NUL or a lone surrogate failed the whole batch of results, forever."""
    assert stores.runs is not None
    await bulk_schedules(database_url, await _app_key(stores), next_whole_second(1.0), 3)
    nasty = StandIn(msg_id_for=lambda n: f"id-{n}\x00\ud800")
    async with standing_in(nasty), running(stores.runs, engine_settings(database_url, tmp_path, nasty.url)):
        await _all_sent(database_url, 3)
    msg_ids = [row["msg_id"] for row in await fetch(database_url, "SELECT msg_id FROM runs")]
    assert all(msg_id.startswith("id-") and "\\u0000" in msg_id and "\\ud800" in msg_id for msg_id in msg_ids)


async def test_no_lease_runs_out_while_runs_wait_for_a_send_slot(
    database_url: str, tmp_path: pathlib.Path, stores: Stores
) -> None:
    """Defect 3: a tick leased a whole batch for 5 slots; runs past the first few leases' worth expired in the
    queue and were sent twice. Now: 40 runs, 5 slots, 0.5 s per send, a 2 s lease: no resend at all."""
    assert stores.runs is not None
    await bulk_schedules(database_url, await _app_key(stores), next_whole_second(1.0), 40)
    async with standing_in(StandIn(delay_seconds=0.5)) as slow:
        settings = engine_settings(database_url, tmp_path, slow.url, send_concurrency=5, lease_seconds=2.0,
                                   send_timeout_seconds=0.6)
        config = engine_config(settings)
        assert config.lease == dt.timedelta(seconds=2)
        async with running(stores.runs, settings, config):
            await _all_sent(database_url, 40, timeout=30)
    assert max(slow.attempts.values()) == 1 and len(slow.deliveries) == 40
    attempts = await fetch(database_url, "SELECT max(attempts) AS most FROM runs")
    assert attempts[0]["most"] == 1


async def test_a_stale_holders_result_changes_nothing(database_url: str, stores: Stores) -> None:
    """Defect 3: a late result from a holder whose lease ran out reopened a run sent meanwhile by another."""
    await bulk_schedules(database_url, await _app_key(stores), dt.datetime.now(UTC) + dt.timedelta(seconds=1), 1)
    assert stores.runs is not None
    planned = await stores.runs.plan_single_fires(dt.timedelta(seconds=5), 10, dt.timedelta(minutes=5),
                                                  dt.timedelta(seconds=5), NO_LEASE)
    [run] = planned.runs
    first = await stores.runs.claim_planned([run.run_id], dt.timedelta(seconds=60), uuid.uuid4())
    assert first == {run.run_id: 1}
    # The first holder's lease runs out; another replica takes the run over (attempt 2) and sends it.
    await fetch(database_url, "UPDATE runs SET lease_until = clock_timestamp() - interval '1 s'")
    runs, _ = await stores.runs.claim_due(10, dt.timedelta(seconds=60), dt.timedelta(minutes=5), 8, uuid.uuid4())
    assert [(taken.run_id, taken.attempts) for taken in runs] == [(run.run_id, 2)]
    now = dt.datetime.now(UTC)
    await stores.runs.record_results([types.RunResult(run.run_id, 2, "sent", now, msg_id="second")])
    # The first holder answers late: a retry. Fenced on its attempt (1), it changes nothing.
    await stores.runs.record_results(
        [types.RunResult(run.run_id, 1, "pending", now, error="HTTP 503", next_attempt_at=now)]
    )
    [row] = await fetch(database_url, "SELECT state, msg_id, attempts FROM runs")
    assert (row["state"], row["msg_id"], row["attempts"]) == ("sent", "second", 2)


async def test_resends_are_capped_by_max_attempts_in_the_claim(database_url: str, stores: Stores) -> None:
    """Defect 1: a run whose holder died on every attempt was resent forever; the claim had no cap."""
    await bulk_schedules(database_url, await _app_key(stores), dt.datetime.now(UTC), 1)
    assert stores.runs is not None
    await stores.runs.plan_single_fires(dt.timedelta(0), 10, dt.timedelta(minutes=5), dt.timedelta(seconds=5), NO_LEASE)
    await fetch(database_url, "UPDATE runs SET state = 'sending', attempts = 8, lease_until = clock_timestamp() - interval '1 s'")
    runs, settled = await stores.runs.claim_due(10, dt.timedelta(seconds=60), dt.timedelta(minutes=5), 8, uuid.uuid4())
    assert runs == [] and [(run.state, run.error[:14]) for run in settled] == [("failed", "gave up after ")]
    [row] = await fetch(database_url, "SELECT state, error, attempts, finished_at FROM runs")
    assert row["state"] == "failed" and row["attempts"] == 8 and row["finished_at"] is not None


async def test_late_resends_obey_the_misfire_grace(database_url: str, stores: Stores) -> None:
    """Defect 6: runs planned, sending or pending before a fleet-wide outage went out hours late."""
    app_key = await _app_key(stores)
    await bulk_schedules(database_url, app_key, dt.datetime.now(UTC), 3)
    assert stores.runs is not None
    await stores.runs.plan_single_fires(dt.timedelta(0), 10, dt.timedelta(minutes=5), dt.timedelta(seconds=5), NO_LEASE)
    # As a fleet-wide outage leaves them, ten minutes on: one of each open state, all expired.
    await fetch(
        database_url,
        "UPDATE runs SET due_at = due_at - interval '10 min', error = 'HTTP 503: down', "
        "state = (ARRAY['planned', 'sending', 'pending'])[row_number], "
        "lease_until = clock_timestamp() - interval '1 s', next_attempt_at = clock_timestamp() - interval '1 s' "
        "FROM (SELECT id AS numbered_id, row_number() OVER (ORDER BY id)::int AS row_number FROM runs) AS numbered "
        "WHERE id = numbered_id",
    )
    runs, settled = await stores.runs.claim_due(10, dt.timedelta(seconds=60), dt.timedelta(minutes=5), 8, uuid.uuid4())
    assert runs == [] and {run.state for run in settled} == {"missed"} and len(settled) == 3
    rows = await fetch(database_url, "SELECT state, error FROM runs")
    assert {row["state"] for row in rows} == {"missed"}
    assert all(row["error"].startswith("missed: found ") and "MISFIRE_GRACE" in row["error"] for row in rows)


async def test_a_task_that_cannot_be_planned_leaves_the_valid_set(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, stores: Stores
) -> None:
    """Defect 7: a task whose trigger could not be planned stayed valid, under the cap, for up to a year."""
    app_key = await _app_key(stores)
    due = dt.datetime.now(UTC)
    trigger = {"periodical": {"start": "2026-01-01 00:00:00", "end": "2026-12-31 00:00:00", "time": "09:00:00",
                              "time_unit": "day", "frequency": 1, "zone_type": 1}}
    schedule_id = uuid.uuid4()
    await fetch(
        database_url,
        "INSERT INTO schedules (id, app_key, name, enabled, trigger, push, next_fire_at, final_fire_at, kind, zone_type, "
        "time_zone) "
        "VALUES ($1, $2, 'broken', true, $3::jsonb, '{}'::jsonb, $4::timestamptz, $4::timestamptz + interval '30 days', "
        "'periodical', 1, 'Nowhere/Gone')",  # a zone tzdata no longer has
        schedule_id, app_key, __import__("json").dumps(trigger), due,
    )
    assert stores.runs is not None
    async with running(stores.runs, engine_settings(database_url, tmp_path, standin.url)):
        rows = await eventually(
            lambda: fetch(database_url, "SELECT state, stopped_reason FROM schedules WHERE id = $1", schedule_id),
            "the task is stopped", until=lambda rows: rows[0]["state"] != "active",
        )
    assert rows[0]["state"] == "expired" and "Nowhere/Gone" in rows[0]["stopped_reason"]
    valid = await fetch(database_url, "SELECT count(*) AS n FROM schedules WHERE schedule_is_valid(state, final_fire_at, now())")
    assert valid[0]["n"] == 0


async def test_a_wrong_push_credentials_key_refuses_to_start(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, stores: Stores, aiohttp_server: Any
) -> None:
    """Defect 8: a missing or wrong key failed every run of the apps with push credentials, for good."""
    key = credentials.new_encryption_key()
    await admin.register_app(stores.schedules, "pushy", push_key="pk", push_secret="ps", credentials_key=key)
    for wrong in (None, credentials.new_encryption_key()):
        settings = engine_settings(database_url, tmp_path, standin.url, push_credentials_key=wrong)
        with pytest.raises(ValueError, match="PUSH_CREDENTIALS_KEY"):
            await aiohttp_server(create_app(settings))
    server = await aiohttp_server(create_app(engine_settings(database_url, tmp_path, standin.url, push_credentials_key=key)))
    assert server is not None


async def test_a_decryption_failure_is_retried_not_failed(database_url: str, tmp_path: pathlib.Path, standin: StandIn,
                                                          stores: Stores) -> None:
    key = credentials.new_encryption_key()
    created = await admin.register_app(stores.schedules, "pushy", push_key="pk", push_secret="ps", credentials_key=key)
    settings = engine_settings(database_url, tmp_path, standin.url, push_credentials_key=credentials.new_encryption_key())
    await bulk_schedules(database_url, created.app.app_key, next_whole_second(0.5), 1)
    assert stores.runs is not None
    async with running(stores.runs, settings):
        rows = await eventually(lambda: fetch(database_url, "SELECT state, error FROM runs"), "the send was tried",
                                until=lambda rows: rows and rows[0]["error"])
    assert rows[0]["state"] in ("pending", "sending") and "cannot be decrypted" in rows[0]["error"]


async def test_random_app_keys_cost_no_query(database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any,
                                             session: aiohttp.ClientSession) -> None:
    """Defect 4: every request with a random app key cost a query on the pool the engine shared."""
    service = await start_service(engine_settings(database_url, tmp_path, "http://127.0.0.1:9", engine_enabled=False),
                                  aiohttp_server, session)
    calls = 0
    real = service.store.get_app_with_secret_digest

    async def counting(app_key: str) -> Any:
        nonlocal calls
        calls += 1
        return await real(app_key)

    service.store.get_app_with_secret_digest = counting
    for key in ("not-a-key", "x" * 24, "ABCDEF0123456789ABCDEF01", "0" * 25):
        headers = {"Authorization": credentials.basic_header(key, "secret")}
        async with session.get(service.base_url + "/v4/schedules", headers=headers) as response:
            assert response.status == 401
    assert calls == 0
    headers = {"Authorization": credentials.basic_header("0" * 24, "secret")}
    async with session.get(service.base_url + "/v4/schedules", headers=headers) as response:
        assert response.status == 401
    assert calls == 1  # a key of the right shape is looked up (once; then cached)


class FastClock(Clock):
    """This process's clock five seconds ahead of the database's."""

    def local(self) -> float:
        return time.time() + 5.0


async def test_a_replica_whose_clock_is_fast_still_sends_on_the_databases_time(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, stores: Stores
) -> None:
    """Defect 5: leases, claims and sends went by each replica's own clock; 5 s fast meant 5 s early."""
    assert stores.runs is not None
    due = next_whole_second(3.0)
    await bulk_schedules(database_url, await _app_key(stores), due, 5)
    settings = engine_settings(database_url, tmp_path, standin.url)
    async with running(stores.runs, settings, clock=FastClock()) as engine:
        delivered = await standin.wait_for(5, timeout=15)
    assert abs(engine.clock.offset + 5.0) < 0.1
    # On time by the database's clock (the same host's): never early, and not late either.
    assert all(0 <= delivery.received_at - due.timestamp() < 0.5 for delivery in delivered)


async def test_stop_takes_at_most_the_drain_time_with_sends_hanging(
    database_url: str, tmp_path: pathlib.Path, stores: Stores
) -> None:
    """The engine's whole stop fits in SHUTDOWN_TIMEOUT_SECONDS even when every send hangs."""
    assert stores.runs is not None
    await bulk_schedules(database_url, await _app_key(stores), next_whole_second(0.5), 30)
    async with standing_in(StandIn(delay_seconds=30.0)) as hanging:
        settings = engine_settings(database_url, tmp_path, hanging.url, send_timeout_seconds=30.0,
                                   shutdown_timeout_seconds=2.0, send_concurrency=10)
        engine = dispatcher.Engine(stores.runs, make_backend(settings), engine_config(settings))
        await engine.start()  # stopped by hand below: how long the stop takes is what is measured
        await eventually(lambda: hanging.arrived, "ten sends hang in flight", until=lambda n: n == 10)
        # ... and ten more leased, queued behind them: the sender's places are full (under load, the plan that
        # leases them can come after the first ten arrived).
        await eventually(
            lambda: fetch(database_url, "SELECT count(*) AS n FROM runs WHERE state = 'sending'"),
            "twenty runs leased", until=lambda rows: rows[0]["n"] == 20,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        await engine.stop()
        took = loop.time() - started
    assert took < 2.0 + 0.5, f"stop took {took:.2f} s"
    states = await _states(database_url)
    # All handed back: the 10 sends in flight and the 10 leased runs queued behind them as pending, the 10 never
    # leased (no place was free for them) as planned.
    assert states == {"pending": 20, "planned": 10}


async def test_a_claim_whose_answer_was_lost_is_asked_again_with_its_token(database_url: str, stores: Stores) -> None:
    """Found by the fault suite (db-cuts): a claim that committed just before its connection was cut looked
    failed, and its runs waited out their lease. Asked again with the same token, they come back, once."""
    await bulk_schedules(database_url, await _app_key(stores), dt.datetime.now(UTC) + dt.timedelta(seconds=1), 2)
    assert stores.runs is not None
    planned = await stores.runs.plan_single_fires(dt.timedelta(seconds=5), 10, dt.timedelta(minutes=5),
                                                  dt.timedelta(seconds=5), NO_LEASE)
    ids = [run.run_id for run in planned.runs]
    token, lease = uuid.uuid4(), dt.timedelta(seconds=60)
    first = await stores.runs.claim_planned(ids, lease, token)  # committed; say its answer never arrived
    again = await stores.runs.claim_planned(ids, lease, token)
    assert first == again == dict.fromkeys(ids, 1)  # the same runs, not attempted twice
    assert await stores.runs.claim_planned(ids, lease, uuid.uuid4()) == {}  # another claim gets nothing
    # The claimer likewise: a claim of due runs, asked again with its token.
    await fetch(database_url, "UPDATE runs SET lease_until = clock_timestamp() - interval '1 s'")
    grace = dt.timedelta(minutes=5)
    taken, _ = await stores.runs.claim_due(10, lease, grace, 8, token := uuid.uuid4())
    retaken, _ = await stores.runs.claim_due(10, lease, grace, 8, token)
    assert sorted((run.run_id, run.attempts) for run in taken) == sorted((run_id, 2) for run_id in ids)
    assert sorted((run.run_id, run.attempts) for run in retaken) == sorted((run_id, 2) for run_id in ids)
    assert (await stores.runs.claim_due(10, lease, grace, 8, uuid.uuid4()))[0] == []


class AnswerLostQueue(RunQueue):
    """The real run queue, whose first plan of single fires commits but answers as if the connection died."""

    def __init__(self, real: RunQueue) -> None:
        self.__dict__.update(real.__dict__)
        self.lost = 0

    async def plan_single_fires(self, *args: Any) -> types.Planned:
        planned = await super().plan_single_fires(*args)
        if not self.lost and planned.leased:
            self.lost += 1
            raise errors.DatabaseUnavailable()
        return planned


async def test_runs_a_plan_leased_whose_answer_was_lost_are_sent_at_once(
    database_url: str, standin: StandIn, stores: Stores
) -> None:
    """A plan leases the runs it finds due already; should its answer be lost after the commit, they are found
    again by the plan's token and sent, instead of waiting out a 60 s lease. The planner and the sender alone,
    driven by hand."""
    assert stores.runs is not None
    queue = AnswerLostQueue(stores.runs)
    await bulk_schedules(database_url, await _app_key(stores), dt.datetime.now(UTC) - dt.timedelta(seconds=1), 5)
    results: list[types.RunResult] = []
    clock = Clock()
    backend = backends.HttpBackend(standin.url, timeout_seconds=2, concurrency=10, credentials_key=None, require_credentials=False)
    sender = Sender(backend, 10, dispatch.RetryPolicy(), results.append, clock)
    ahead = PlannedAhead(queue, sender, clock, lease=dt.timedelta(seconds=60), batch_size=100, capacity=100)
    waker = Waker(queue, clock, plan_ahead=dt.timedelta(seconds=2), max_idle_seconds=1)
    planner = Planner(
        queue, ahead, sender, waker, clock, lease=dt.timedelta(seconds=60), wave_offsets=(0,),
        grace=dt.timedelta(minutes=5), plan_ahead=dt.timedelta(seconds=2), reservation=dt.timedelta(seconds=5),
        batch_size=100, planners=1, sweep_interval=dt.timedelta(minutes=1),
    )
    await backend.start()
    try:
        with pytest.raises(errors.DatabaseUnavailable):
            await planner.tick(100)
        assert queue.lost == 1 and sender.in_flight == 0 and len(ahead) == 0  # leased, but not known to be
        assert sender.free == 0  # all 20 places the plan had stay kept: it may have leased up to 20
        await planner.reclaim()
        await eventually(lambda: results, "five results", until=lambda found: len(found) == 5)
    finally:
        await backend.close()
    assert sender.free == 2 * 10
    assert sorted((result.state, result.attempts) for result in results) == [("sent", 1)] * 5
    assert len({delivery.cid for delivery in standin.delivered()}) == 5 == len(standin.deliveries)


async def test_a_half_open_listen_connection_is_noticed_and_made_again(proxy: DatabaseProxy) -> None:
    """The waker's heartbeat finds a LISTEN connection that silently stopped carrying anything, and opens a new
    one, which hears the next notification."""
    stores = await Stores.open(proxy.dsn, api_pool_size=1, engine_pool_size=2, timeout=2)
    assert stores.runs is not None
    waker = Waker(stores.runs, Clock(), plan_ahead=dt.timedelta(seconds=2), max_idle_seconds=5,
                  heartbeat_seconds=0.2, connect_timeout=2)
    stopping = asyncio.Event()
    listening = asyncio.create_task(waker.run(stopping))
    try:
        await eventually(lambda: waker.listening, "listening")
        assert proxy.freeze() >= 1
        await eventually(lambda: waker.connections_made, "a new LISTEN connection", until=lambda made: made == 2)
        await eventually(lambda: waker.listening, "listening again")
        waker.wake.clear()
        notifier = await asyncpg.connect(proxy.dsn)
        try:
            await notifier.execute("SELECT pg_notify('schedule_changes', '0')")
        finally:
            await notifier.close()
        await eventually(lambda: waker.wake.is_set(), "the notification woke the planner")
    finally:
        stopping.set()
        await asyncio.wait_for(listening, 5)
        await asyncio.wait_for(stores.close(), 5)  # its frozen pool connections are cut, not waited for
