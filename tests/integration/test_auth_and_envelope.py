"""Authentication, tenant isolation, and the error envelope on every error path."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import web

from service.app import create_app
from service.settings import Settings
from tests.integration.conftest import Api, Credentials, Service, schedule_body

AUTH_FAILED = {"error": {"code": 28101, "message": "Basic authentication failed."}}


async def test_missing_credentials(api: Api) -> None:
    reply = await api.list(auth=None)
    assert reply.status == 401
    assert reply.json == AUTH_FAILED
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="schedules"'


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b":secret-only").decode(),
    ],
)
async def test_malformed_credentials(api: Api, header: str) -> None:
    reply = await api.call("GET", "/v4/schedules", auth=None, headers={"Authorization": header})
    assert (reply.status, reply.json) == (401, AUTH_FAILED)


async def test_wrong_secret_and_unknown_key(api: Api) -> None:
    wrong_secret = Credentials(api.auth.app_key, api.auth.master_secret + "x")
    unknown_key = Credentials("unknown-app-key", api.auth.master_secret)
    for auth in (wrong_secret, unknown_key):
        reply = await api.create(schedule_body(), auth=auth)
        assert (reply.status, reply.json) == (401, AUTH_FAILED)
    listed = await api.list()
    assert listed.json["total_count"] == 0  # nothing was created by the refused calls


async def test_other_apps_schedule_answers_like_an_unknown_one(service: Service, api: Api) -> None:
    created = (await api.create(schedule_body())).json["schedule_id"]
    other = await service.new_app()
    unknown = "00000000-0000-4000-8000-000000000000"
    for schedule_id in (created, unknown):
        assert (await other.get(schedule_id)).json == (await other.get(unknown)).json
        for reply in (
            await other.get(schedule_id),
            await other.delete(schedule_id),
            await other.update(schedule_id, {"name": "stolen"}),
            await other.msg_ids(schedule_id),
        ):
            assert (reply.status, reply.error_code) == (404, 28104)
    assert (await other.list()).json["total_count"] == 0
    mine = await api.get(created)
    assert mine.status == 200 and mine.json["name"] == "schedule push example"
    other.check_against_spec()


async def test_unknown_route_under_v4_needs_credentials_first(api: Api) -> None:
    anonymous = await api.call("GET", "/v4/nothing-here", auth=None)
    assert (anonymous.status, anonymous.error_code) == (401, 28101)
    known = await api.call("GET", "/v4/nothing-here")
    assert known.status == 404
    assert known.json == {"error": {"code": 28104, "message": "/v4/nothing-here: no such resource"}}


async def test_unknown_route_elsewhere(api: Api) -> None:
    reply = await api.call("GET", "/elsewhere", auth=None)
    assert (reply.status, reply.error_code) == (404, 28104)


async def test_method_not_allowed(api: Api) -> None:
    reply = await api.call("PATCH", "/v4/schedules")
    assert reply.status == 405
    assert reply.json == {"error": {"code": 28100, "message": "method: PATCH is not allowed on /v4/schedules"}}


async def test_body_over_64_kib(api: Api) -> None:
    body = schedule_body()
    body["push"]["body"]["notification"]["padding"] = "x" * (64 * 1024)
    reply = await api.create(body)
    assert reply.status == 413
    assert reply.json == {"error": {"code": 28100, "message": "body: must be at most 65536 bytes"}}
    assert (await api.list()).json["total_count"] == 0


async def test_internal_error_has_the_envelope_and_no_trace(settings: Settings, aiohttp_client: Any) -> None:
    app = create_app(settings)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    response = await client.get("/broken")
    assert response.status == 500
    assert await response.json() == {"error": {"code": 28200, "message": "Server internal error."}}
