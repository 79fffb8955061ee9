"""The dispatch engine against a real PostgreSQL and a real HTTP stand-in for the push API."""

from __future__ import annotations

import asyncio
import datetime as dt
import pathlib
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from service import admin
from service.app import engine_config, make_backend
from service.domain import credentials
from service.engine import dispatcher
from service.store import database
from service.store.stores import Stores
from tests.bulk import bulk_schedules
from tests.integration.conftest import (
    UTC,
    Api,
    Credentials,
    Service,
    engine_settings,
    fetch,
    future_time,
    next_whole_second,
    runs_settled,
    schedule_body,
    sent_msg_ids,
    start_service,
    wall_at,
)
from tests.standin import StandIn
from tests.waiting import eventually


async def test_task_due_in_a_second_arrives_on_time(dispatching_service: Service, standin: StandIn) -> None:
    api = await dispatching_service.new_app()
    due = next_whole_second(1.0)
    body = schedule_body(time=wall_at(due), cid="user-supplied-cid")
    body["push"]["body"]["options"]["cid"] = "fixed-cid-in-push"
    schedule_id = (await api.create(body)).json["schedule_id"]
    [delivery] = await standin.wait_for(1, timeout=10)
    lateness = delivery.received_at - due.timestamp()
    assert 0 <= lateness < 0.5, f"lateness {lateness * 1000:.0f} ms"
    # What arrived is the stored push, with the run's idempotency key in body.options.cid.
    sent = delivery.body
    key = sent["body"]["options"].pop("cid")
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    expected = body["push"]
    expected["body"]["options"].pop("cid")
    assert sent == expected
    assert "X-Push-Utc-Offset" not in delivery.headers
    # Results are recorded in batches just after the send.
    await eventually(lambda: sent_msg_ids(api, schedule_id), what="the send's result recorded")
    ids = (await api.msg_ids(schedule_id)).json
    assert ids == {"count": 1, "msgids": [delivery.msg_id], "MsgIds": [delivery.msg_id]}
    # Fired once: the task has expired.
    assert (await api.get(schedule_id)).status == 404
    api.check_against_spec()


async def test_notify_wakes_a_sleeping_engine(database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession) -> None:
    """With a 60 s safety-net sleep, only the NOTIFY of the create can make the engine fire on time."""
    settings = engine_settings(database_url, tmp_path, standin.url, engine_max_idle_seconds=60)
    service = await start_service(settings, aiohttp_server, session)
    api = await service.new_app()

    async def engine_listens() -> bool:
        rows = await fetch(
            database_url,
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
        return bool(rows)

    # Only once its LISTEN connection is up does the engine sleep up to 60 s (before, at most 0.5 s).
    await eventually(engine_listens, what="the engine's LISTEN connection")
    # It then looks once more, finds nothing due and goes to sleep. Nothing outside the engine shows that
    # moment, so this stays a bounded wait.
    await asyncio.sleep(0.5)
    due = next_whole_second(1.0)
    await api.create(schedule_body(time=wall_at(due)))
    [delivery] = await standin.wait_for(1, timeout=10)
    assert delivery.received_at - due.timestamp() < 0.5


async def test_only_fires_within_the_wake_horizon_notify(api: Api, database_url: str) -> None:
    """A fire later than the engines' longest sleep needs no NOTIFY (and NOTIFY serializes commits); a near
    one does, for creates and for updates alike."""
    received: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(database.NOTIFY_CHANNEL, lambda *args: received.append(args[-1]))
    sentinels = 0

    async def notified_so_far() -> list[float]:
        """The service's notifications committed before this call. PostgreSQL delivers notifications in
        commit order, so once a sentinel sent now has arrived, every earlier one has too, and none that
        should not exist can still come."""
        nonlocal sentinels
        sentinels += 1
        sentinel = f"sentinel-{sentinels}"  # not a number: the service's engines wake once and ignore it

        async def arrived() -> bool:
            return sentinel in received

        await fetch(database_url, "SELECT pg_notify($1, $2)", database.NOTIFY_CHANNEL, sentinel)
        await eventually(arrived, what=f"the {sentinel} notification")
        return [float(payload) for payload in received if not payload.startswith("sentinel-")]

    try:
        far = (await api.create(schedule_body(time=future_time(3600)))).json["schedule_id"]
        near_due = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
        await api.create(schedule_body(time=wall_at(near_due)))
        assert await notified_so_far() == [near_due.timestamp()]
        moved_due = near_due + dt.timedelta(seconds=1)
        assert (await api.update(far, {"trigger": {"single": {"time": wall_at(moved_due)}}})).status == 200
        assert (await api.update(far, {"trigger": {"single": {"time": future_time(7200)}}})).status == 200
        assert await notified_so_far() == [near_due.timestamp(), moved_due.timestamp()]
    finally:
        await listener.close()


async def test_zone_type_2_first_wave(dispatching_service: Service, standin: StandIn, database_url: str) -> None:
    api = await dispatching_service.new_app()
    first_wave = next_whole_second(1.5)
    # The wall time that UTC+14 reaches at `first_wave`: that wave is seconds away, the next (+13:45) 15 min.
    wall = first_wave + dt.timedelta(hours=14)
    schedule_id = (await api.create(schedule_body(time=wall_at(wall), zone_type=2))).json["schedule_id"]
    [delivery] = await standin.wait_for(1, timeout=10)
    assert delivery.headers["X-Push-Utc-Offset"] == "+14:00"
    assert 0 <= delivery.received_at - first_wave.timestamp() < 0.5
    await eventually(lambda: sent_msg_ids(api, schedule_id), what="the send's result recorded")
    assert (await api.msg_ids(schedule_id)).json["msgids"] == [delivery.msg_id]
    # Valid until its last wave (UTC-12, 26 h later): still listed and readable.
    assert (await api.get(schedule_id)).status == 200
    runs = await fetch(database_url, "SELECT utc_offset_minutes, state FROM runs WHERE schedule_id = $1", uuid.UUID(schedule_id))
    assert [(row["utc_offset_minutes"], row["state"]) for row in runs] == [(840, "sent")]
    assert len(standin.deliveries) == 1  # the next wave is not due yet


async def test_delete_disable_and_time_change_just_before_due(dispatching_service: Service, standin: StandIn) -> None:
    api = await dispatching_service.new_app()
    due = next_whole_second(1.5)
    ids = {}
    for name in ("control", "deleted", "disabled", "moved"):
        body = schedule_body(time=wall_at(due), name=name)
        body["push"]["request_id"] = name
        ids[name] = (await api.create(body)).json["schedule_id"]
    await asyncio.sleep(max(0.0, due.timestamp() - time.time() - 0.25))  # the changes land just before due
    assert (await api.delete(ids["deleted"])).status == 200
    assert (await api.update(ids["disabled"], {"enabled": False})).status == 200
    later = wall_at(due + dt.timedelta(hours=1))
    assert (await api.update(ids["moved"], {"trigger": {"single": {"time": later, "zone_type": 1}}})).status == 200
    # Proves a negative, so a bounded wait: whatever the changes failed to stop arrives with the control
    # push, all due at the same instant; the wait ends early only when a second push arrives.
    await standin.wait_for(2, timeout=2.0)
    assert [delivery.body["request_id"] for delivery in standin.deliveries] == ["control"]
    # The disabled task's time passed while it was disabled: it expired unfired.
    assert (await api.get(ids["disabled"])).status == 404
    assert (await api.msg_ids(ids["disabled"])).json["count"] == 0
    assert (await api.get(ids["moved"])).json["trigger"]["single"]["time"] == later


async def scripted_runs(
    api: Api, database_url: str, due: dt.datetime, scripts: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One task per script, due at `due`, each push telling the stand-in how to answer (tests/standin.py);
    once every run's outcome is recorded, the runs by task name."""
    for name, script in scripts.items():
        body = schedule_body(time=wall_at(due), name=name)
        body["push"]["custom_args"] = {"standin": script}
        await api.create(body)
    await eventually(
        lambda: runs_settled(database_url, len(scripts)), what="every run's outcome recorded", timeout=30
    )
    rows = await fetch(
        database_url,
        "SELECT s.name, r.state, r.attempts, r.msg_id, r.error FROM runs r JOIN schedules s ON s.id = r.schedule_id",
    )
    return {row["name"]: row for row in rows}


async def test_backend_failures_end_sent_and_400_fails_at_once(dispatching_service: Service, standin: StandIn, database_url: str) -> None:
    api = await dispatching_service.new_app()
    due = next_whole_second(1.0)
    scripts = {
        "flaky_500": {"fail_times": 3, "status": 500},
        "flaky_503": {"fail_times": 2, "status": 503},
        "stalls": {"fail_times": 1, "stall": 3},  # longer than the 1 s send timeout
        "rate_limited": {"fail_times": 1, "status": 429, "retry_after": "1"},
        "rejected": {"fail_times": 99, "status": 400},
    }
    runs = await scripted_runs(api, database_url, due, scripts)
    for name in ("flaky_500", "flaky_503", "stalls", "rate_limited"):
        assert runs[name]["state"] == "sent", (name, runs[name]["error"])
        assert runs[name]["attempts"] == scripts[name]["fail_times"] + 1
    assert runs["rejected"]["state"] == "failed"
    assert runs["rejected"]["attempts"] == 1
    assert runs["rejected"]["error"].startswith("HTTP 400")
    assert "stand-in answers 400" in runs["rejected"]["error"]

    def attempts_of(name: str) -> list[Any]:
        return [d for d in standin.deliveries if d.body["custom_args"]["standin"] == scripts[name]]

    assert len(attempts_of("rejected")) == 1  # not retried
    # 429 honoured Retry-After: the second attempt came no sooner than a second after the first.
    limited = attempts_of("rate_limited")
    assert len(limited) == 2 and limited[1].received_at - limited[0].received_at >= 0.95
    # Every resend carried the same idempotency key as the first attempt.
    for name in ("flaky_500", "flaky_503", "stalls", "rate_limited"):
        assert len({d.cid for d in attempts_of(name)}) == 1


@pytest.mark.parametrize(
    "engine_count,planners,batch_size,due_in",
    [
        (3, 2, 500, 2.0),  # replicas planning ahead of the instant
        (1, 4, 100, -1.0),  # one engine, four planners at once on a backlog already due
    ],
)
async def test_engines_deliver_each_task_once(
    database_url: str,
    tmp_path: pathlib.Path,
    standin: StandIn,
    engine_count: int,
    planners: int,
    batch_size: int,
    due_in: float,
) -> None:
    count = 3000
    # Nothing fails here, so no send may time out and no lease run out: engine_settings' 1 s send timeout and
    # 2 s lease (short, for the failure paths) are less than 200 sends at once can take on a busy machine, and
    # a send that timed out or whose lease ran out is sent again by design (at least once, under the same
    # key). That is not what this test is about.
    settings = engine_settings(
        database_url,
        tmp_path,
        standin.url,
        engine_planners=planners,
        engine_batch_size=batch_size,
        send_timeout_seconds=10.0,
        lease_seconds=30.0,
    )
    stores = await Stores.open(database_url, api_pool_size=2, engine_pool_size=30)
    try:
        app = await admin.register_app(stores.schedules, "burst", "UTC", 10_000)
        due = next_whole_second(due_in)
        await bulk_schedules(database_url, app.app.app_key, due, count)
        engines = [
            dispatcher.Engine(stores.runs, make_backend(settings), engine_config(settings)) for _ in range(engine_count)
        ]
        for engine in engines:
            await engine.start()
        try:
            delivered = await standin.wait_for(count, timeout=60)
            await eventually(lambda: runs_settled(database_url, count), what="every run's outcome recorded")
            # Proves a negative, so a bounded wait: anything doubled would arrive by now.
            await asyncio.sleep(1.0)
        finally:
            for engine in engines:
                await engine.stop()
    finally:
        await stores.close()
    assert len(standin.deliveries) == count
    assert len({delivery.cid for delivery in delivered}) == count
    states = await fetch(database_url, "SELECT state, count(*) AS n, count(DISTINCT msg_id) AS ids FROM runs GROUP BY state")
    assert [(row["state"], row["n"], row["ids"]) for row in states] == [("sent", count, count)]


def test_push_secret_is_stored_encrypted() -> None:
    key = credentials.new_encryption_key()
    token = credentials.encrypt_push_secret("push-secret-value", key)
    assert b"push-secret-value" not in token
    assert credentials.decrypt_push_secret(token, key) == "push-secret-value"
    with pytest.raises(ValueError, match="cannot be decrypted"):
        credentials.decrypt_push_secret(token, credentials.new_encryption_key())


async def test_push_credentials_reach_the_backend(database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession) -> None:
    key = credentials.new_encryption_key()
    settings = engine_settings(database_url, tmp_path, standin.url, push_credentials_key=key)
    service = await start_service(settings, aiohttp_server, session)
    created = await admin.register_app(
        service.store, "pushy", "UTC", 10, push_key="pk-1", push_secret="ps-1", credentials_key=key
    )
    api = Api(session, service.base_url, Credentials(created.app.app_key, created.master_secret))
    await api.create(schedule_body(time=wall_at(next_whole_second(1.0))))
    [delivery] = await standin.wait_for(1, timeout=10)
    assert delivery.headers["Authorization"] == credentials.basic_header("pk-1", "ps-1")
    stored = await fetch(database_url, "SELECT push_key, push_secret_encrypted FROM apps WHERE app_key = $1", created.app.app_key)
    assert stored[0]["push_key"] == "pk-1" and b"ps-1" not in bytes(stored[0]["push_secret_encrypted"])


async def test_downtime_late_within_grace_is_sent_older_is_missed(database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession) -> None:
    """Tasks that fell due while no engine ran: one 1 min late (sent), one 10 min late (missed, not sent)."""
    stores = await Stores.open(database_url, api_pool_size=1)
    try:
        app = await admin.register_app(stores.schedules, "downtime")
    finally:
        await stores.close()
    now = dt.datetime.now(UTC).replace(microsecond=0)
    await bulk_schedules(database_url, app.app.app_key, now - dt.timedelta(minutes=1), 1)
    await bulk_schedules(database_url, app.app.app_key, now - dt.timedelta(minutes=10), 1)
    await start_service(engine_settings(database_url, tmp_path, standin.url, misfire_grace=300), aiohttp_server, session)
    [delivery] = await standin.wait_for(1, timeout=10)
    await eventually(lambda: runs_settled(database_url, 2), what="both runs' outcomes recorded")
    # Proves a negative, so a bounded wait: the missed task is not sent after all, nor the other twice.
    await asyncio.sleep(0.5)
    assert len(standin.deliveries) == 1
    runs = await fetch(database_url, "SELECT due_at, state, msg_id FROM runs ORDER BY due_at")
    assert [(row["due_at"], row["state"]) for row in runs] == [
        (now - dt.timedelta(minutes=10), "missed"),
        (now - dt.timedelta(minutes=1), "sent"),
    ]
    assert runs[1]["msg_id"] == delivery.msg_id and runs[0]["msg_id"] is None


async def test_redirects_are_not_followed_and_answers_are_read_up_to_64_kib(
    dispatching_service: Service, standin: StandIn, database_url: str
) -> None:
    """A 3xx is a failed attempt with its status kept (retried: a push API URL fixed in time still delivers),
    never followed to where it points; an answer is read up to 64 KiB, so a 1 MB one is not a msg_id."""
    api = await dispatching_service.new_app()
    due = next_whole_second(1.0)
    scripts = {
        "redirected": {"fail_times": 1, "status": 302, "location": "/elsewhere"},
        "huge_answer": {"fail_times": 0, "pad_bytes": 1_000_000},
    }
    runs = await scripted_runs(api, database_url, due, scripts)
    assert (runs["redirected"]["state"], runs["redirected"]["attempts"]) == ("sent", 2)
    # Both attempts reached the push API itself, none went where the 302 pointed.
    redirected = [d for d in standin.deliveries if d.body.get("custom_args", {}).get("standin", {}).get("status") == 302]
    assert [d.status for d in redirected] == [302, 200]
    assert runs["huge_answer"]["state"] == "failed"
    assert runs["huge_answer"]["error"].startswith("HTTP 200 without a msg_id")
