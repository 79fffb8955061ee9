"""Run now, webhooks, the polling pattern and parameters (issue 13), against the real service, a real database
and the stand-in push API; every exchange on a path of openapi.yaml is checked against it."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from service import admin
from service.settings import Settings
from tests.integration.conftest import (
    Api,
    Service,
    engine_settings,
    fetch,
    future_time,
    next_whole_second,
    schedule_body,
    start_service,
    wall_at,
)
from tests.integration.dbproxy import DatabaseProxy
from tests.standin import StandIn
from tests.waiting import eventually

GREETING = {
    "from": "push",
    "to": {"alias": ["{{user}}"]},
    "body": {
        "platform": "web",
        "notification": {"alert": "Hello {{ user }}, {{greeting}}!", "web": {"title": "{{greeting}}"}},
        "options": {"time_to_live": 60},
    },
    "custom_args": {"standin": {"answer": "{{answer}}"}},
}
DEFAULTS = {"user": "everyone", "greeting": "good morning", "answer": ""}


def greeting_body(time: str | None = None, **overrides: Any) -> dict[str, Any]:
    return schedule_body(time, push=GREETING, params=DEFAULTS, **overrides)


@pytest.fixture
async def client(dispatching_service: Service) -> AsyncIterator[Api]:
    api = await dispatching_service.new_app()
    yield api
    api.check_against_spec()


async def create(api: Api, body: dict[str, Any]) -> str:
    reply = await api.create(body)
    assert reply.status == 200, reply.json
    return str(reply.json["schedule_id"])


async def poll(api: Api, location: str, *, auth: Any = "default", timeout: float = 10.0) -> Any:
    """Follow a status URL until it answers 200, checking every 202 on the way; the 200 reply."""

    async def ended() -> Any:
        reply = await api.call("GET", location, auth=auth)
        if reply.status == 202:
            assert reply.headers["Location"] == location
            assert reply.headers["Retry-After"] == "2"
            assert reply.json["status"] == "in progress"
            assert 0 <= reply.json["percent"] < 100
            return None
        assert reply.status == 200, reply.json
        return reply

    return await eventually(ended, f"{location} to answer 200", timeout=timeout)


def alerts(standin: StandIn) -> list[str]:
    return sorted(delivery.body["body"]["notification"]["alert"] for delivery in standin.delivered())


# -- parameters on the task ------------------------------------------------------------------------------


async def test_params_are_stored_shown_and_replaced_by_a_put(api: Api) -> None:
    schedule_id = await create(api, greeting_body())
    assert (await api.get(schedule_id)).json["params"] == DEFAULTS
    plain = await create(api, schedule_body())
    assert (await api.get(plain)).json["params"] == {}
    updated = await api.update(schedule_id, {"params": {**DEFAULTS, "greeting": "hi"}})
    assert updated.status == 200 and updated.json["params"]["greeting"] == "hi"


async def test_a_push_without_params_keeps_its_braces_as_text(api: Api) -> None:
    push = {**GREETING, "custom_args": "literal {{x}}"}
    schedule_id = await create(api, schedule_body(push=push))
    assert (await api.get(schedule_id)).json["push"]["custom_args"] == "literal {{x}}"


@pytest.mark.parametrize(
    "body_change, message_start",
    [
        ({"params": {"user": "u"}},
         "push.custom_args.standin.answer: uses {{answer}}, which params does not declare (declared: user)"),
        ({"params": {**DEFAULTS, "bad-name": "x"}}, "params: names must be 1..64 ASCII letters"),
        ({"params": {**DEFAULTS, "user": 3}}, "params.user: must be a string"),
        ({"params": {f"p{index}": "" for index in range(51)}}, "params: must declare at most 50 names"),
        ({"params": {**DEFAULTS, "greeting": "x" * 4000}}, "params.greeting: with the defaults filled in, push.body"),
        ({"params": None}, "params: must not be null"),
    ],
)
async def test_bad_params_are_refused_naming_the_field(
    api: Api, body_change: dict[str, Any], message_start: str
) -> None:
    reply = await api.create({**greeting_body(), **body_change})
    assert reply.status == 400 and reply.error_code == 28100
    assert reply.json["error"]["message"].startswith(message_start), reply.json
    assert (await api.list()).json["total_count"] == 0


async def test_a_scheduled_fire_sends_the_defaults(client: Api, standin: StandIn) -> None:
    due = next_whole_second(2)
    await create(client, greeting_body(wall_at(due)))
    [delivery] = await standin.wait_for(1, timeout=10)
    assert delivery.body["body"]["notification"]["alert"] == "Hello everyone, good morning!"
    assert delivery.body["to"] == {"alias": ["everyone"]}


# -- run now and the polling pattern ----------------------------------------------------------------------


async def test_run_now_answers_202_and_its_location_ends_in_the_same_200(client: Api, standin: StandIn) -> None:
    schedule_id = await create(client, greeting_body())
    before = (await client.get(schedule_id)).json["next_run_at"]
    started = await client.call("POST", f"/v4/schedules/{schedule_id}/run")
    assert started.status == 202, started.json
    run_id = started.json["run_id"]
    location = f"/v4/schedules/{schedule_id}/runs/{run_id}"
    assert started.headers["Location"] == location and started.headers["Retry-After"] == "2"
    assert started.json["source"] == "run_now" and started.json["total"] == 1
    ended = await poll(client, location)
    [delivery] = standin.delivered()
    assert ended.json["status"] == "succeeded"
    assert ended.json["msg_ids"] == [delivery.msg_id] and ended.json["errors"] == []
    assert (ended.json["sent"], ended.json["failed"], ended.json["total"]) == (1, 0, 1)
    assert delivery.body["body"]["notification"]["alert"] == "Hello everyone, good morning!"
    assert "X-Push-Utc-Offset" not in delivery.headers
    again = await client.call("GET", location)
    assert (again.status, again.json) == (200, ended.json)
    # The task's next fire has not moved; the run is in its history and its msg-ids.
    assert (await client.get(schedule_id)).json["next_run_at"] == before
    history = (await client.call("GET", f"/v4/schedules/{schedule_id}/runs")).json["runs"]
    assert [(row["source"], row["triggered_run_id"], row["param_set"]) for row in history] == [("run_now", run_id, 0)]
    assert (await client.msg_ids(schedule_id)).json["msgids"] == [delivery.msg_id]


async def test_run_now_of_a_zone_type_2_task_goes_to_the_whole_audience_at_once(
    client: Api, standin: StandIn
) -> None:
    schedule_id = await create(client, schedule_body(future_time(86400 * 3), zone_type=2))
    started = await client.call("POST", f"/v4/schedules/{schedule_id}/run")
    await poll(client, started.headers["Location"])
    [delivery] = standin.delivered()
    assert "X-Push-Utc-Offset" not in delivery.headers


async def test_a_list_of_parameter_sets_is_one_run_of_that_many_pushes(client: Api, standin: StandIn) -> None:
    schedule_id = await create(client, greeting_body())
    sets = [{"user": "ana"}, {"user": "bo", "answer": "400"}, {"user": "cy", "greeting": None}, {"greeting": ""}]
    started = await client.call("POST", f"/v4/schedules/{schedule_id}/run", json={"QueryParameters": sets})
    assert started.status == 202 and started.json["total"] == 4
    ended = (await poll(client, started.headers["Location"])).json
    assert ended["status"] == "partial" and (ended["sent"], ended["failed"]) == (3, 1)
    [error] = ended["errors"]
    assert error["index"] == 1 and error["error"].startswith("HTTP 400")
    assert alerts(standin) == ["Hello ana, good morning!", "Hello cy, good morning!", "Hello everyone, good morning!"]
    sent_in_order = [d.msg_id for d in sorted(standin.delivered(), key=lambda d: d.body["to"]["alias"][0])]
    assert ended["msg_ids"] == [msg_id for msg_id in sent_in_order if msg_id]  # ana, cy, everyone: set order
    history = (await client.call("GET", f"/v4/schedules/{schedule_id}/runs")).json
    assert history["total_count"] == 4


async def test_a_run_whose_every_push_is_refused_has_failed(client: Api) -> None:
    schedule_id = await create(client, greeting_body())
    started = await client.call("POST", f"/v4/schedules/{schedule_id}/run", json={"params": {"answer": "400"}})
    ended = (await poll(client, started.headers["Location"])).json
    assert ended["status"] == "failed" and ended["msg_ids"] == [] and ended["errors"][0]["index"] == 0


async def test_run_now_shows_progress_while_pushes_are_under_way(
    database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    slow = StandIn(delay_seconds=0.3)  # within the harness's 1 s send timeout
    await slow.start()
    try:
        service = await start_service(
            engine_settings(database_url, tmp_path, slow.url, send_concurrency=2), aiohttp_server, session
        )
        api = await service.new_app()
        schedule_id = await create(api, greeting_body())
        sets = [{"user": f"u{index}"} for index in range(6)]
        started = await api.call("POST", f"/v4/schedules/{schedule_id}/run", json={"QueryParameters": sets})
        location = started.headers["Location"]

        async def part_done() -> Any:
            reply = await api.call("GET", location)
            return reply if reply.status == 202 and 0 < reply.json["percent"] < 100 else None

        progress = (await eventually(part_done, "a poll in the middle of the run")).json
        assert progress["total"] == 6 and progress["percent"] == (progress["sent"] + progress["failed"]) * 100 // 6
        assert set(progress) == {"run_id", "schedule_id", "source", "status", "percent", "total", "sent", "failed",
                                 "next_attempt_at"}
        ended = await poll(api, location, timeout=20)
        assert ended.json["status"] == "succeeded" and len(ended.json["msg_ids"]) == 6
        api.check_against_spec()
    finally:
        await slow.stop()


async def test_run_now_works_on_a_disabled_task_and_counts_towards_max_failures(client: Api) -> None:
    schedule_id = await create(client, greeting_body(max_failures=2))
    for _ in range(2):
        started = await client.call("POST", f"/v4/schedules/{schedule_id}/run", json={"params": {"answer": "400"}})
        await poll(client, started.headers["Location"])
    shown = (await client.get(schedule_id)).json
    assert shown["enabled"] is False and shown["consecutive_failures"] == 2
    assert shown["disabled_reason"].startswith("disabled after 2 consecutive failed runs")
    started = await client.call("POST", f"/v4/schedules/{schedule_id}/run")
    assert started.status == 202
    assert (await poll(client, started.headers["Location"])).json["status"] == "succeeded"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"QueryParameters": {"nobody": "x"}},
         'QueryParameters.nobody: the task declares no parameter "nobody"; it declares: answer, greeting, user'),
        ({"QueryParameters": [{"user": "a"}, {"greeting": "x" * 4000}]},
         "QueryParameters[1].greeting: after substitution, push.body"),
        ({"QueryParameters": {"user": 7}}, "QueryParameters.user: must be a string, or null for the default"),
        ({"QueryParameters": [{}] * 1001}, "QueryParameters: must hold 1..1000 parameter sets, got 1001"),
        ({"QueryParameters": {}, "params": {}}, "body: holds both QueryParameters and params"),
        ({"other": 1}, "other: is not a known field"),
        ([1], "body: must be a JSON object"),
        (None, "body: must be a JSON object"),
    ],
)
async def test_bad_parameters_are_refused_and_queue_nothing(
    api: Api, database_url: str, body: Any, message: str
) -> None:
    schedule_id = await create(api, greeting_body())
    sent = {"data": "null"} if body is None else {"json": body}  # JSON null, sent as a body
    reply = await api.call("POST", f"/v4/schedules/{schedule_id}/run", **sent)
    assert reply.status == 400 and reply.error_code == 28100
    assert reply.json["error"]["message"].startswith(message), reply.json
    assert await fetch(database_url, "SELECT 1 FROM runs UNION ALL SELECT 1 FROM triggered_runs") == []


async def test_run_now_of_an_unknown_deleted_or_other_apps_task_is_404(api: Api, service: Service) -> None:
    schedule_id = await create(api, greeting_body())
    other = await service.new_app()
    assert (await other.call("POST", f"/v4/schedules/{schedule_id}/run")).status == 404
    assert (await api.call("POST", "/v4/schedules/not-a-uuid/run")).status == 404
    await api.delete(schedule_id)
    reply = await api.call("POST", f"/v4/schedules/{schedule_id}/run")
    assert (reply.status, reply.error_code) == (404, 28104)
    unknown = await api.call("GET", f"/v4/schedules/{schedule_id}/runs/00000000-0000-0000-0000-000000000000")
    assert (unknown.status, unknown.error_code) == (404, 28104)


async def test_an_idempotency_key_returns_the_first_run(client: Api, standin: StandIn, database_url: str) -> None:
    schedule_id = await create(client, greeting_body())
    path = f"/v4/schedules/{schedule_id}/run"
    replies = await asyncio.gather(
        *(client.call("POST", path, headers={"Idempotency-Key": "order-42"}) for _ in range(5))
    )
    assert {reply.json["run_id"] for reply in replies} == {replies[0].json["run_id"]}
    await poll(client, replies[0].headers["Location"])
    later = await client.call("POST", path, headers={"Idempotency-Key": "order-42"})
    assert later.json["run_id"] == replies[0].json["run_id"] and later.json["status"] == "succeeded"
    other = await client.call("POST", path, headers={"Idempotency-Key": "order-43"})
    assert other.json["run_id"] != replies[0].json["run_id"]
    await poll(client, other.headers["Location"])
    assert len(standin.delivered()) == 2
    bad = await client.call("POST", path, headers={"Idempotency-Key": "x" * 256})
    assert (bad.status, bad.error_code) == (400, 28100) and "Idempotency-Key" in bad.json["error"]["message"]


async def test_deleting_a_task_cancels_its_queued_triggered_pushes(
    database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    # No push API answers at this port: every attempt is a connection error, retried.
    service = await start_service(
        engine_settings(database_url, tmp_path, "http://127.0.0.1:9", retry_base_seconds=30, retry_max_seconds=30),
        aiohttp_server, session,
    )
    api = await service.new_app()
    schedule_id = await create(api, greeting_body())
    started = await api.call("POST", f"/v4/schedules/{schedule_id}/run")
    location = started.headers["Location"]
    await eventually(lambda: fetch(database_url, "SELECT 1 FROM runs WHERE state = 'pending' AND attempts = 1"))
    # Disabling spares it (it was asked for explicitly); deleting cancels it.
    await api.update(schedule_id, {"enabled": False})
    [row] = await fetch(database_url, "SELECT state FROM runs")
    assert row["state"] == "pending"
    await api.delete(schedule_id)
    [row] = await fetch(database_url, "SELECT state FROM runs")
    assert row["state"] == "cancelled"
    assert (await api.call("GET", location)).status == 404  # the task is deleted: its runs answer no more


# -- webhooks ---------------------------------------------------------------------------------------------


async def make_hook(api: Api, schedule_id: str) -> dict[str, Any]:
    reply = await api.call("POST", f"/v4/schedules/{schedule_id}/webhook")
    assert reply.status == 200, reply.json
    return dict(reply.json)


async def test_a_webhook_is_made_shown_rotated_and_revoked(api: Api, database_url: str) -> None:
    schedule_id = await create(api, greeting_body())
    path = f"/v4/schedules/{schedule_id}/webhook"
    none = await api.call("GET", path)
    assert (none.status, none.error_code) == (404, 28104) and "no webhook" in none.json["error"]["message"]
    made = await make_hook(api, schedule_id)
    token = made["token"]
    assert token.startswith("whk_") and len(token) == 47
    assert made["url"] == f"/hooks/{token}" and made["poll_url"] == f"/hooks/{token}/poll"
    shown = (await api.call("GET", path)).json
    assert shown["exists"] is True and token not in str(shown)
    [row] = await fetch(database_url, "SELECT webhook_digest FROM schedules")
    assert token.encode() not in bytes(row["webhook_digest"]) and len(row["webhook_digest"]) == 32
    assert (await api.call("POST", f"/hooks/{token}", auth=None)).status == 200
    rotated = await make_hook(api, schedule_id)
    assert (await api.call("POST", f"/hooks/{token}", auth=None)).status == 404
    assert (await api.call("POST", f"/hooks/{rotated['token']}", auth=None)).status == 200
    revoked = await api.call("DELETE", path)
    assert revoked.json == {"schedule_id": schedule_id, "exists": False}
    assert (await api.call("GET", path)).status == 404  # revoked reads as gone, as a deleted resource does
    gone = await api.call("POST", f"/hooks/{rotated['token']}", auth=None)
    assert (gone.status, gone.error_code) == (404, 28104)
    assert (await api.call("POST", "/hooks/whk_short", auth=None)).status == 404


async def test_a_fire_and_forget_hook_sends_with_its_parameters(client: Api, standin: StandIn) -> None:
    schedule_id = await create(client, greeting_body())
    token = (await make_hook(client, schedule_id))["token"]
    reply = await client.call("POST", f"/hooks/{token}", auth=None, json={"QueryParameters": {"user": "dee"}})
    assert reply.status == 200 and set(reply.json) == {"run_id"}
    await eventually(lambda: alerts(standin) == ["Hello dee, good morning!"], "the hook's push")
    history = (await client.call("GET", f"/v4/schedules/{schedule_id}/runs")).json["runs"]
    assert history[0]["source"] == "webhook" and history[0]["triggered_run_id"] == reply.json["run_id"]


@pytest.mark.parametrize("data", ["", "not json", "[1, 2]", '{"event": "push", "QueryParameters": null}'])
async def test_a_hook_body_that_is_not_parameters_means_the_defaults(
    client: Api, standin: StandIn, data: str
) -> None:
    schedule_id = await create(client, greeting_body())
    token = (await make_hook(client, schedule_id))["token"]
    if "null" in data:  # null parameters are bad parameters, not "no parameters"
        reply = await client.call("POST", f"/hooks/{token}", auth=None, data=data)
        assert (reply.status, reply.error_code) == (400, 28100)
        return
    reply = await client.call("POST", f"/hooks/{token}", auth=None, data=data)
    assert reply.status == 200, reply.json
    await eventually(lambda: alerts(standin) == ["Hello everyone, good morning!"], "the defaults' push")


async def test_the_polling_hook_follows_the_pattern(client: Api, standin: StandIn) -> None:
    schedule_id = await create(client, greeting_body())
    token = (await make_hook(client, schedule_id))["token"]
    started = await client.call("POST", f"/hooks/{token}/poll", auth=None, json={"params": {"user": "eve"}})
    assert started.status == 202 and started.headers["Retry-After"] == "2"
    location = started.headers["Location"]
    assert location == f"/hooks/{token}/runs/{started.json['run_id']}"
    ended = await poll(client, location, auth=None)
    assert ended.json["status"] == "succeeded" and ended.json["source"] == "webhook"
    assert ended.json["msg_ids"] == [standin.delivered()[0].msg_id]


async def test_hooks_of_a_disabled_or_expired_task_or_app_answer_409(
    api: Api, service: Service, database_url: str
) -> None:
    schedule_id = await create(api, greeting_body())
    token = (await make_hook(api, schedule_id))["token"]
    await api.update(schedule_id, {"enabled": False})
    refused = await api.call("POST", f"/hooks/{token}", auth=None)
    assert (refused.status, refused.error_code) == (409, 28409) and "disabled" in refused.json["error"]["message"]
    await api.update(schedule_id, {"enabled": True})
    await admin.set_app_state(service.store, api.auth.app_key, "disabled", dt.datetime.now(dt.timezone.utc))
    refused = await api.call("POST", f"/hooks/{token}/poll", auth=None)
    assert (refused.status, refused.error_code) == (409, 28409) and "app" in refused.json["error"]["message"]
    await admin.set_app_state(service.store, api.auth.app_key, "active", dt.datetime.now(dt.timezone.utc))
    # Expired: its last fire has passed (moved into the past behind the API's back).
    await fetch(database_url, "UPDATE schedules SET final_fire_at = now() - interval '1 second'")
    refused = await api.call("POST", f"/hooks/{token}", auth=None)
    assert (refused.status, refused.error_code) == (409, 28409) and "expired" in refused.json["error"]["message"]
    assert await fetch(database_url, "SELECT 1 FROM triggered_runs") == []


async def test_hooks_past_the_rate_answer_429_with_retry_after(
    database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any, session: aiohttp.ClientSession, standin: StandIn
) -> None:
    settings = engine_settings(database_url, tmp_path, standin.url, hook_rate_per_minute=3)
    replicas = [await start_service(settings, aiohttp_server, session) for _ in range(2)]
    api = await replicas[0].new_app()
    schedule_id = await create(api, greeting_body())
    token = (await make_hook(api, schedule_id))["token"]
    answers = []
    for index in range(4):  # alternating replicas: the limit is the task's, not a process's
        url = f"{replicas[index % 2].base_url}/hooks/{token}"
        async with session.post(url) as response:
            answers.append((response.status, response.headers.get("Retry-After"), await response.json()))
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    _, retry_after, body = answers[3]
    assert retry_after is not None and 1 <= int(retry_after) <= 60
    assert body["error"]["code"] == 28429
    # Run now is not a webhook call: not limited.
    assert (await api.call("POST", f"/v4/schedules/{schedule_id}/run")).status == 202


async def test_the_token_never_reaches_the_log_or_the_metrics(
    api: Api, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    schedule_id = await create(api, greeting_body())
    token = (await make_hook(api, schedule_id))["token"]
    with caplog.at_level(logging.INFO, logger="service.access"):
        await api.call("POST", f"/hooks/{token}", auth=None)
        await api.call("POST", f"/hooks/{token}/poll", auth=None)
    routes = [record.__dict__.get("route") for record in caplog.records if record.name == "service.access"]
    assert "/hooks/{token}" in routes and "/hooks/{token}/poll" in routes
    assert all(token not in record.getMessage() and token not in str(record.__dict__) for record in caplog.records)
    async with service.session.get(f"{service.base_url}/metrics") as response:
        metrics = await response.text()
    assert 'route="/hooks/{token}"' in metrics and token not in metrics


async def test_locations_follow_public_base_url_never_the_host_header(
    database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    settings = engine_settings(database_url, tmp_path, "http://127.0.0.1:9", public_base_url="https://push.example.com/")
    service = await start_service(settings, aiohttp_server, session)
    api = await service.new_app()
    schedule_id = await create(api, greeting_body())
    started = await api.call("POST", f"/v4/schedules/{schedule_id}/run", headers={"Host": "evil.example"})
    assert started.headers["Location"].startswith(f"https://push.example.com/v4/schedules/{schedule_id}/runs/")
    made = await make_hook(api, schedule_id)
    assert made["url"] == f"https://push.example.com/hooks/{made['token']}"
    relative = await start_service(engine_settings(database_url, tmp_path, "http://127.0.0.1:9"), aiohttp_server, session)
    async with session.post(
        f"{relative.base_url}/v4/schedules/{schedule_id}/run", headers={"Host": "evil.example",
                                                                        "Authorization": api.auth.header}
    ) as response:
        assert response.status == 202
        assert response.headers["Location"].startswith("/v4/schedules/")


async def test_the_history_s_scheduled_runs_answer_on_the_status_url(client: Api, standin: StandIn) -> None:
    due = next_whole_second(2)
    schedule_id = await create(client, greeting_body(wall_at(due)))
    await standin.wait_for(1, timeout=10)

    async def recorded() -> Any:
        runs = (await client.call("GET", f"/v4/schedules/{schedule_id}/runs")).json["runs"]
        return runs if runs and runs[0]["state"] == "sent" else None

    [run] = await eventually(recorded, "the fire's run recorded")
    assert run["source"] == "schedule" and run["triggered_run_id"] is None and run["param_set"] is None
    reply = await client.call("GET", f"/v4/schedules/{schedule_id}/runs/{run['run_id']}")
    assert reply.status == 200 and reply.json["status"] == "succeeded" and reply.json["source"] == "schedule"
    assert reply.json["started_at"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")



async def test_a_hook_during_a_database_outage_answers_503_and_queues_nothing(
    proxy: DatabaseProxy, database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any,
    session: aiohttp.ClientSession,
) -> None:
    settings = Settings(database_url=proxy.dsn, data_dir=tmp_path, db_timeout_seconds=2, engine_enabled=False)
    service = await start_service(settings, aiohttp_server, session)
    api = await service.new_app()
    schedule_id = await create(api, greeting_body())
    token = (await make_hook(api, schedule_id))["token"]
    await proxy.stop()
    for path in (f"/hooks/{token}", f"/hooks/{token}/poll"):
        down = await api.call("POST", path, auth=None)
        assert (down.status, down.error_code, down.headers["Retry-After"]) == (503, 28203, "1")
    await proxy.start()
    assert await fetch(database_url, "SELECT 1 FROM triggered_runs") == []
    assert (await api.call("POST", f"/hooks/{token}", auth=None)).status == 200
    api.check_against_spec()


async def test_an_idempotency_key_starts_a_new_run_after_24_hours(api: Api, database_url: str) -> None:
    schedule_id = await create(api, greeting_body())
    path = f"/v4/schedules/{schedule_id}/run"
    first = await api.call("POST", path, headers={"Idempotency-Key": "daily"})
    await fetch(database_url, "UPDATE triggered_runs SET created_at = created_at - interval '24 hours 1 second'")
    second = await api.call("POST", path, headers={"Idempotency-Key": "daily"})
    assert second.status == 202 and second.json["run_id"] != first.json["run_id"]
    third = await api.call("POST", path, headers={"Idempotency-Key": "daily"})
    assert third.json["run_id"] == second.json["run_id"]
