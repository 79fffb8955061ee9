"""The service on a real database, driven over real HTTP; every exchange is checked against openapi.yaml."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json as jsonlib
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from service import admin
from service.api import keys
from service.app import create_app
from service.settings import Settings
from tests import examples
from tests.integration.dbproxy import DatabaseProxy
from tests.standin import StandIn

SPEC_PATH = pathlib.Path(__file__).resolve().parents[2] / "openapi.yaml"
_SPEC = OpenAPI.from_file_path(str(SPEC_PATH))
OPERATIONS_PATHS = ("/healthz", "/readyz", "/metrics")


@dataclasses.dataclass
class _SpecRequest:
    """openapi-core's Request protocol over what the test sent."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str
    body: bytes | None


@dataclasses.dataclass
class _SpecResponse:
    status_code: int
    content_type: str
    headers: Headers
    data: bytes


@dataclasses.dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def error_code(self) -> int:
        return self.json["error"]["code"]


@dataclasses.dataclass(frozen=True)
class Credentials:
    app_key: str
    master_secret: str

    @property
    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.app_key}:{self.master_secret}".encode()).decode()


class Api:
    """A client of the running service that records every exchange for the spec check."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, auth: Credentials) -> None:
        self.session = session
        self.base_url = base_url
        self.auth = auth
        self.exchanges: list[tuple[_SpecRequest, _SpecResponse]] = []

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        params: dict[str, str] | None = None,
        auth: Credentials | str | None = "default",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = jsonlib.dumps(json).encode() if json is not None else (data.encode() if isinstance(data, str) else data)
        request_headers = {"Content-Type": "application/json"} if body is not None else {}
        use_auth = self.auth if auth == "default" else auth
        if isinstance(use_auth, Credentials):
            request_headers["Authorization"] = use_auth.header
        request_headers.update(headers or {})
        async with self.session.request(
            method, self.base_url + path, data=body, params=params, headers=request_headers
        ) as response:
            payload = await response.read()
            reply = Reply(response.status, response.headers, payload)
        self.exchanges.append(
            (
                _SpecRequest(
                    host_url=self.base_url,
                    path=path,
                    method=method.lower(),
                    parameters=RequestParameters(
                        query=ImmutableMultiDict(params or {}), header=Headers(request_headers)
                    ),
                    content_type=request_headers.get("Content-Type", ""),
                    body=body,
                ),
                _SpecResponse(
                    status_code=reply.status,
                    content_type=response.headers.get("Content-Type", ""),
                    headers=Headers(list(response.headers.items())),
                    data=payload,
                ),
            )
        )
        return reply

    # Shorthands for the v4 endpoints.
    async def create(self, body: dict[str, Any], **kwargs: Any) -> Reply:
        return await self.call("POST", "/v4/schedules", json=body, **kwargs)

    async def get(self, schedule_id: str, **kwargs: Any) -> Reply:
        return await self.call("GET", f"/v4/schedules/{schedule_id}", **kwargs)

    async def list(self, page: str | None = None, **kwargs: Any) -> Reply:
        return await self.call("GET", "/v4/schedules", params=None if page is None else {"page": page}, **kwargs)

    async def update(self, schedule_id: str, body: Any, **kwargs: Any) -> Reply:
        return await self.call("PUT", f"/v4/schedules/{schedule_id}", json=body, **kwargs)

    async def delete(self, schedule_id: str, **kwargs: Any) -> Reply:
        return await self.call("DELETE", f"/v4/schedules/{schedule_id}", **kwargs)

    async def msg_ids(self, schedule_id: str, spelling: str = "msg-ids", **kwargs: Any) -> Reply:
        return await self.call("GET", f"/v4/schedules/{schedule_id}/{spelling}", **kwargs)

    def check_against_spec(self) -> None:
        """Every response to a path the spec describes must conform to it."""
        for request, response in self.exchanges:
            if not request.path.startswith(("/v4/schedules", "/hooks/")) and request.path not in OPERATIONS_PATHS:
                continue
            if response.status_code == 405:  # a method the spec has no operation for
                continue
            _SPEC.validate_response(request, response)


@dataclasses.dataclass
class Service:
    """The running service under test and what the tests need of it."""

    app: Any
    base_url: str
    session: aiohttp.ClientSession

    @property
    def store(self) -> Any:
        return self.app[keys.SCHEDULES]

    async def new_app(self, *, time_zone: str = "UTC", max_schedules: int = 1000) -> Api:
        created = await admin.register_app(self.store, "test", time_zone, max_schedules)
        return Api(self.session, self.base_url, Credentials(created.app.app_key, created.master_secret))


@pytest.fixture
def settings(database_url: str, tmp_path: pathlib.Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path)


@pytest.fixture
async def service(settings: Settings, aiohttp_server: Any) -> AsyncIterator[Service]:
    server = await aiohttp_server(create_app(settings))
    async with aiohttp.ClientSession() as session:
        yield Service(server.app, str(server.make_url("")).rstrip("/"), session)


@pytest.fixture
async def api(service: Service) -> AsyncIterator[Api]:
    """A client authenticated as a fresh app (UTC, cap 1000); its exchanges are checked against the spec."""
    client = await service.new_app()
    yield client
    client.check_against_spec()


UTC = dt.timezone.utc


def engine_settings(database_url: str, data_dir: pathlib.Path, push_api_url: str, **overrides: Any) -> Settings:
    """Settings with short retry and lease times, so failure paths run in seconds."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "push_api_url": push_api_url,
        # The stand-in is one tenant's push API: apps without push credentials send without Authorization.
        "push_require_credentials": False,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.5,
        "send_timeout_seconds": 1.0,
        "lease_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    yield server
    await server.stop()


async def start_service(settings: Settings, aiohttp_server: Any, session: aiohttp.ClientSession) -> Service:
    server = await aiohttp_server(create_app(settings))
    return Service(server.app, str(server.make_url("")).rstrip("/"), session)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def dispatching_service(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession
) -> Service:
    """The service with its engine sending to the stand-in (short retries and leases)."""
    return await start_service(engine_settings(database_url, tmp_path, standin.url), aiohttp_server, session)


def wall_at(instant: dt.datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def next_whole_second(at_least: float) -> dt.datetime:
    """A whole-second UTC instant at least `at_least` seconds from now (times on the wire are whole seconds)."""
    soon = dt.datetime.now(UTC) + dt.timedelta(seconds=at_least)
    return soon.replace(microsecond=0) + dt.timedelta(seconds=1)


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


# A run in one of these states has no recorded outcome yet; every other state is final.
OPEN_RUN_STATES = ("planned", "pending", "sending")


async def runs_settled(database_url: str, count: int) -> bool:
    """For `eventually`: at least `count` runs exist and none is still open, so every outcome is recorded."""
    [row] = await fetch(
        database_url,
        "SELECT count(*) AS runs, count(*) FILTER (WHERE state = ANY($1::text[])) AS open FROM runs",
        list(OPEN_RUN_STATES),
    )
    return row["runs"] >= count and row["open"] == 0


async def sent_msg_ids(api: Api, schedule_id: str) -> list[str]:
    """For `eventually`: a task's msg-ids, empty until the result of its first send is recorded."""
    return (await api.msg_ids(schedule_id)).json["msgids"]


def future_time(seconds: float = 3600, zone: dt.tzinfo = dt.timezone.utc) -> str:
    instant = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def schedule_body(time: str | None = None, zone_type: int | None = 1, **overrides: Any) -> dict[str, Any]:
    """The seed's create example, due an hour from now unless `time` says otherwise."""
    return examples.seed_schedule(time or future_time(), zone_type, **overrides)



@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    """A TCP proxy in front of the test database: stopping it is a real outage."""
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    yield proxy
    await proxy.stop()
