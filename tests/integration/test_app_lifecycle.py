"""An app's whole life from the operator's side (issue 11): disable, enable, delete, rotate the secret, update;
the demo app; and what is sent for an app without push credentials."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from service import admin
from service.app import APP_CHANGES, create_app
from service.domain import credentials
from service.engine.backends import NO_PUSH_CREDENTIALS
from service.settings import Settings
from service.store.notices import APP_CHANGES_APPLICATION_NAME
from service.store.stores import Stores
from tests.conftest import MEASURED
from tests.integration.conftest import (
    UTC,
    Api,
    Credentials,
    Service,
    engine_settings,
    fetch,
    next_whole_second,
    schedule_body,
    start_service,
    wall_at,
)
from tests.integration.test_cli_and_serve import cli_env, run_cli
from tests.standin import StandIn
from tests.waiting import eventually

# What the issue asks: a change reaches every replica within a second. The credential cache's lifetime (10 s)
# is only the fallback, so passing within this bound shows the notification did it.
EVERY_REPLICA_WITHIN = 1.0


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


async def _statuses(replicas: list[Api], auth: Credentials) -> list[int]:
    return [(await replica.list(auth=auth)).status for replica in replicas]


async def _every_replica_answers(replicas: list[Api], auth: Credentials, status: int, what: str) -> float:
    """Seconds until every replica answered `status` (at most EVERY_REPLICA_WITHIN)."""
    started = time.monotonic()
    await eventually(
        lambda: _statuses(replicas, auth),
        what,
        until=lambda seen: seen == [status] * len(replicas),
        timeout=EVERY_REPLICA_WITHIN,
        interval=0.02,
    )
    return time.monotonic() - started


async def test_rotate_disable_enable_delete_reach_every_replica_within_a_second(
    settings: Settings, aiohttp_server: Any, session: aiohttp.ClientSession,
    record_property: Callable[[str, object], None],
) -> None:
    first = await start_service(settings, aiohttp_server, session)
    second = await start_service(settings, aiohttp_server, session)
    on_first = await first.new_app()
    old = on_first.auth
    replicas = [on_first, Api(session, second.base_url, old)]
    assert await _statuses(replicas, old) == [200, 200]  # both replicas have the app cached now
    store = first.store

    rotated = await admin.rotate_secret(store, old.app_key)
    new = Credentials(old.app_key, str(rotated["master_secret"]))
    assert new.master_secret != old.master_secret
    took = [await _every_replica_answers(replicas, old, 401, "the old secret refused on every replica")]
    assert await _statuses(replicas, new) == [200, 200]

    disabled = await admin.set_app_state(store, old.app_key, "disabled", _now())
    assert (disabled["state"], disabled["previous_state"]) == ("disabled", "active")
    took.append(await _every_replica_answers(replicas, new, 401, "a disabled app refused on every replica"))
    assert (await replicas[1].create(schedule_body(), auth=new)).error_code == 28101

    await admin.set_app_state(store, old.app_key, "active", _now())
    await _every_replica_answers(replicas, new, 200, "an enabled app served again on every replica")

    deleted = await admin.set_app_state(store, old.app_key, "deleted", _now())
    assert deleted["state"] == "deleted"
    took.append(await _every_replica_answers(replicas, new, 401, "a deleted app refused on every replica"))
    record_property(
        MEASURED, "app rotate/disable/delete to refused on both replicas: "
        + ", ".join(f"{seconds * 1000:.0f} ms" for seconds in took) + " (bound 1 s; the cache lives 10 s)",
    )
    with pytest.raises(ValueError, match="is deleted"):
        await admin.set_app_state(store, old.app_key, "active", _now())
    with pytest.raises(ValueError, match="is deleted"):
        await admin.rotate_secret(store, old.app_key)
    with pytest.raises(admin.UnknownApp):
        await admin.set_app_state(store, "f" * 24, "disabled", _now())
    for replica in replicas:
        replica.check_against_spec()


async def test_a_lost_listen_connection_clears_the_cache_and_comes_back(
    settings: Settings, aiohttp_server: Any, session: aiohttp.ClientSession, database_url: str
) -> None:
    """The listener's connection cut: it is made again, and changes reach the process as before."""
    service = await start_service(settings, aiohttp_server, session)
    api = await service.new_app()
    assert (await api.list()).status == 200
    listener = service.app[APP_CHANGES]
    await eventually(lambda: listener.connections_made, "the app-changes listener connected", until=lambda n: n == 1)
    cut = await fetch(
        database_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        APP_CHANGES_APPLICATION_NAME,
    )
    assert len(cut) == 1
    await eventually(lambda: listener.connections_made, "the listener connected again", until=lambda n: n == 2)
    await admin.set_app_state(service.store, api.auth.app_key, "disabled", _now())
    await _every_replica_answers([api], api.auth, 401, "a disabled app refused after the reconnection")


async def test_disabled_app_sends_nothing_and_enabling_sends_what_is_within_grace(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    service = await start_service(engine_settings(database_url, tmp_path, standin.url), aiohttp_server, session)
    stopped, control = await service.new_app(), await service.new_app()
    due = next_whole_second(2.5)
    # Planned ahead by now, or soon: disabling must drop the runs planned ahead, not only stop planning.
    stopped_id = (await stopped.create(schedule_body(time=wall_at(due), name="stopped"))).json["schedule_id"]
    control_body = schedule_body(time=wall_at(due + dt.timedelta(seconds=1)), name="control")
    control_body["push"]["body"]["notification"]["alert"] = "control"
    await control.create(control_body)
    await eventually(
        lambda: fetch(database_url, "SELECT 1 FROM runs r JOIN schedules s ON s.id = r.schedule_id WHERE s.name = 'stopped'"),
        "the stopped app's task planned ahead",
    )
    await admin.set_app_state(service.store, stopped.auth.app_key, "disabled", _now())

    # The control task falls due a second after the stopped one: once it arrived, the stopped one had its chance.
    [delivery] = await standin.wait_for(1, timeout=10)
    assert delivery.body["body"]["notification"]["alert"] == "control"
    rows = await fetch(
        database_url, "SELECT r.state FROM runs r WHERE r.schedule_id = $1::uuid AND r.state <> 'cancelled'", stopped_id
    )
    assert rows == []

    # Enabled again within MISFIRE_GRACE: the fire that passed meanwhile is sent now, as after downtime.
    await admin.set_app_state(service.store, stopped.auth.app_key, "active", _now())
    deliveries = await standin.wait_for(2, timeout=10)
    assert len(deliveries) == 2
    [sent] = await eventually(
        lambda: fetch(database_url, "SELECT msg_id FROM runs WHERE schedule_id = $1::uuid AND state = 'sent'", stopped_id),
        "the stopped app's run recorded sent",
    )
    assert sent["msg_id"] == deliveries[1].msg_id


async def test_deleting_an_app_deletes_its_tasks_and_their_runs_to_go(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    service = await start_service(engine_settings(database_url, tmp_path, standin.url), aiohttp_server, session)
    doomed = await service.new_app()
    for seconds in (2, 3600, 7200):
        assert (await doomed.create(schedule_body(time=wall_at(next_whole_second(seconds))))).status == 200
    await eventually(
        lambda: fetch(database_url, "SELECT 1 FROM runs WHERE state = 'planned'"), "the first task planned ahead"
    )
    await admin.set_app_state(service.store, doomed.auth.app_key, "deleted", _now())
    states = await fetch(database_url, "SELECT DISTINCT state FROM schedules WHERE app_key = $1", doomed.auth.app_key)
    assert [row["state"] for row in states] == ["deleted"]
    assert await fetch(database_url, "SELECT state FROM runs WHERE state IN ('planned', 'pending', 'sending')") == []
    assert (await doomed.list()).status == 401
    # Nothing goes out for it: a task of another app due later arrives alone.
    other = await service.new_app()
    await other.create(schedule_body(time=wall_at(next_whole_second(2))))
    await standin.wait_for(1, timeout=10)
    assert len(standin.delivered()) == 1


async def test_a_new_time_zone_applies_to_new_tasks_and_stored_ones_keep_their_instants(api: Api, service: Service, database_url: str) -> None:
    wall = (dt.datetime.now(UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%d 09:00:00")
    stored_id = (await api.create(schedule_body(time=wall, name="before"))).json["schedule_id"]
    updated = await admin.update_app(service.store, api.auth.app_key, time_zone="Asia/Shanghai", max_schedules=2)
    assert (updated["time_zone"], updated["max_schedules"]) == ("Asia/Shanghai", 2)

    async def created_in_the_new_zone() -> str:
        reply = await api.create(schedule_body(time=wall, name="after"))
        if reply.status != 200:
            return ""
        schedule_id = str(reply.json["schedule_id"])
        [row] = await fetch(database_url, "SELECT time_zone FROM schedules WHERE id = $1::uuid", schedule_id)
        if row["time_zone"] != "Asia/Shanghai":  # created before the notification reached the API process
            await api.delete(schedule_id)
            return ""
        return schedule_id

    # The API process learns the new zone through the notification: within milliseconds, not before the next
    # request is certain, so the test waits for a create that has it.
    new_id = await eventually(created_in_the_new_zone, "a create in the new zone after the update")
    rows = {
        row["name"]: row
        for row in await fetch(
            database_url,
            "SELECT name, time_zone, final_fire_at FROM schedules WHERE app_key = $1 AND state <> 'deleted'",
            api.auth.app_key,
        )
    }
    assert rows["before"]["time_zone"] == "UTC" and rows["after"]["time_zone"] == "Asia/Shanghai"
    assert rows["before"]["final_fire_at"] - rows["after"]["final_fire_at"] == dt.timedelta(hours=8)
    assert new_id

    # Renaming keeps the task's zone; replacing its trigger reads it in the app's zone now.
    await api.update(stored_id, {"name": "renamed"})
    [kept] = await fetch(database_url, "SELECT time_zone FROM schedules WHERE id = $1::uuid", stored_id)
    assert kept["time_zone"] == "UTC"
    await api.update(stored_id, {"trigger": {"single": {"time": wall, "zone_type": 1}}})
    [moved] = await fetch(database_url, "SELECT time_zone FROM schedules WHERE id = $1::uuid", stored_id)
    assert moved["time_zone"] == "Asia/Shanghai"

    # A cap below what the app has deletes nothing and refuses creates.
    await admin.update_app(service.store, api.auth.app_key, max_schedules=1)
    full = await eventually(
        lambda: api.create(schedule_body(time=wall, name="over")), "the lower cap applied", until=lambda r: r.status == 400
    )
    assert "its cap is 1" in full.json["error"]["message"]
    assert (await api.list()).json["total_count"] == 2
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        await admin.update_app(service.store, api.auth.app_key, time_zone="Mars/Olympus")


async def test_demo_app_only_on_the_embedded_database(settings: Settings, database_url: str, aiohttp_server: Any) -> None:
    """DATABASE_URL names a production database: no demo app there, whatever it holds."""
    await aiohttp_server(create_app(settings))
    assert await fetch(database_url, "SELECT app_key FROM apps") == []
    assert not (settings.data_dir / admin.DEMO_CREDENTIALS_FILE).exists()


async def test_replicas_starting_together_create_one_demo_app(database_url: str, tmp_path: pathlib.Path) -> None:
    opened = [await Stores.open(database_url, api_pool_size=1) for _ in range(4)]
    try:
        created = await asyncio.gather(
            *(admin.ensure_demo_app(stores.schedules, tmp_path / str(n), 10) for n, stores in enumerate(opened))
        )
    finally:
        for stores in opened:
            await stores.close()
    assert len([app for app in created if app is not None]) == 1
    assert len(await fetch(database_url, "SELECT app_key FROM apps")) == 1


async def test_no_push_credentials_fails_the_run_unless_allowed(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    """PUSH_API_URL with many tenants: an app without push credentials sends nothing as nobody."""
    key = credentials.new_encryption_key()
    settings = engine_settings(
        database_url, tmp_path, standin.url, push_require_credentials=True, push_credentials_key=key
    )
    service = await start_service(settings, aiohttp_server, session)
    bare = await service.new_app()
    made = await admin.register_app(service.store, "pushy", push_key="pk", push_secret="ps", credentials_key=key)
    pushy = Api(session, service.base_url, Credentials(made.app.app_key, made.master_secret))
    due = wall_at(next_whole_second(1))
    bare_id = (await bare.create(schedule_body(time=due))).json["schedule_id"]
    await pushy.create(schedule_body(time=wall_at(next_whole_second(2))))
    [delivery] = await standin.wait_for(1, timeout=10)
    assert delivery.headers["Authorization"] == credentials.basic_header("pk", "ps")
    [run] = await eventually(
        lambda: fetch(database_url, "SELECT state, attempts, error FROM runs WHERE schedule_id = $1::uuid AND state <> 'sending'", bare_id),
        "the bare app's run settled",
    )
    assert (run["state"], run["attempts"], run["error"]) == ("failed", 1, NO_PUSH_CREDENTIALS)
    assert len(standin.delivered()) == 1

    # Giving it credentials later is `apps update`.
    await admin.update_app(service.store, bare.auth.app_key, push_key="pk2", push_secret="ps2", credentials_key=key)
    await bare.create(schedule_body(time=wall_at(next_whole_second(1)), name="later"))
    deliveries = await standin.wait_for(2, timeout=10)
    assert deliveries[1].headers["Authorization"] == credentials.basic_header("pk2", "ps2")


def test_cli_manages_an_apps_life_and_prints_json(database_url: str, tmp_path: pathlib.Path) -> None:
    env = cli_env(DATABASE_URL=database_url, DATA_DIR=str(tmp_path))
    created = json.loads(run_cli("apps", "create", "--name", "ops", env=env).stdout)
    key = created["app_key"]

    def cli(*args: str) -> Any:
        done = run_cli("apps", *args, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert cli("disable", key)["state"] == "disabled"
    assert cli("enable", key)["state"] == "active"
    rotated = cli("rotate-secret", key)
    assert set(rotated) == {"app_key", "master_secret"} and rotated["master_secret"] != created["master_secret"]
    updated = cli("update", key, "--time-zone", "Europe/Paris", "--max-schedules", "5")
    assert (updated["time_zone"], updated["max_schedules"], updated["has_push_credentials"]) == ("Europe/Paris", 5, False)
    assert cli("delete", key)["state"] == "deleted"
    [listed] = [json.loads(line) for line in run_cli("apps", "list", env=env).stdout.splitlines()]
    assert (listed["app_key"], listed["state"]) == (key, "deleted")
    assert "secret" not in json.dumps(listed).replace("has_push_credentials", "")

    for args, message in (
        (("enable", key), "is deleted"),
        (("disable", "0" * 24), "no app"),
        (("update", key), "nothing to update"),
    ):
        refused = run_cli("apps", *args, env=env)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
