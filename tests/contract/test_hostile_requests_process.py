"""The hostile-request corpus (tests/integration/test_hostile_requests.py) against the real `python -m service`
process, whose HTTP server is configured as in production: aiohttp's test server cancels a handler whose
client left, the real one lets it run, so what happens to a request cut short is seen only here.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.contract.conftest import RunningService
from tests.integration.conftest import Credentials
from tests.integration.test_cli_and_serve import cli_env, run_cli
from tests.integration.test_hostile_requests import (
    MALFORMED_HTTP,
    S,
    render,
    send_raw,
    snapshot,
    valid_create,
    wrong_answers,
)
from tests.waiting import eventually


@pytest.fixture
def app_credentials(running_service: RunningService) -> Credentials:
    created = run_cli("apps", "create", "--name", "hostile", env=cli_env(DATABASE_URL=running_service.database_url))
    assert created.returncode == 0, created.stderr
    values = json.loads(created.stdout)
    return Credentials(values["app_key"], values["master_secret"])


@pytest.fixture
async def database(running_service: RunningService) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(running_service.database_url)
    yield connection
    await connection.close()


async def create_one(running_service: RunningService, credentials: Credentials) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(
        running_service.base_url + S, json=valid_create(), headers={"Authorization": credentials.header}
    ) as response:
        assert response.status == 200, await response.text()
        schedule_id: str = (await response.json())["schedule_id"]
    return schedule_id


def request_lines(running_service: RunningService) -> list[dict[str, object]]:
    return [event for event in map(json.loads, running_service.log_lines()) if event.get("event") == "request"]


async def test_the_corpus_gets_the_same_answers_from_the_real_process(
    running_service: RunningService, app_credentials: Credentials, database: asyncpg.Connection
) -> None:
    schedule_id = await create_one(running_service, app_credentials)
    wrong = await wrong_answers(running_service.base_url, app_credentials.header, schedule_id, database)
    assert not wrong, "\n".join(wrong)


async def test_a_client_leaving_mid_body_is_logged_499_not_500(
    running_service: RunningService, app_credentials: Credentials
) -> None:
    await create_one(running_service, app_credentials)  # its app is authenticated and cached now
    seen = len(request_lines(running_service))
    url = urllib.parse.urlsplit(running_service.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = (
        f"POST {S} HTTP/1.1\r\nHost: service\r\nAuthorization: {app_credentials.header}\r\n"
        "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    )
    writer.write(head.encode())
    # The 100 Continue comes just before the handler runs and waits for the body: the client leaves then.
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b'{"name": ')
    await writer.drain()
    writer.close()
    [line] = await eventually(lambda: request_lines(running_service)[seen:], "the request's log line")
    assert (line["method"], line["route"], line["status"]) == ("POST", S, 499)
    assert not any('"unhandled error' in text for text in running_service.log_lines())


async def test_what_the_http_parser_refuses_gets_the_envelope_from_the_real_process(
    running_service: RunningService, app_credentials: Credentials, database: asyncpg.Connection
) -> None:
    """`serve` runs its connections with service.api.server: bytes that are not valid HTTP get the envelope
    (28100, the parser's status kept), not aiohttp's plain text; nothing changes."""
    schedule_id = await create_one(running_service, app_credentials)
    before = await snapshot(database)
    wrong = []
    for case in MALFORMED_HTTP:
        reply = await send_raw(running_service.base_url, render(case, app_credentials.header, schedule_id))
        try:
            code = json.loads(reply.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if (reply.status, code, reply.headers.get("content-type", "").split(";")[0]) != (
            case.status, 28100, "application/json"
        ):
            wrong.append(f"{case.name}: {reply.status} {reply.headers.get('content-type')} {reply.body[:120]!r}")
    assert not wrong, "\n".join(wrong)
    assert await snapshot(database) == before
