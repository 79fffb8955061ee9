"""A corpus of hostile requests, each with the exact answer it must get: never a 5xx, always the error envelope,
and nothing changed in the database.

Every request is written byte by byte to a raw socket, so the corpus can hold what a well-behaved client
library refuses to send (non-ASCII header bytes, broken encodings, lying Content-Length). Each test starts
from a database holding one app and one valid schedule (`{id}` in a path), and checks that the request left
every row of it as it was.

MALFORMED_HTTP holds the requests aiohttp's HTTP parser refuses before any application code sees them. Here,
under aiohttp's test server, the point is the 4xx; the real process (`serve`, service/api/server.py) answers
them in the envelope, which tests/contract/test_hostile_requests_process.py checks.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.integration.conftest import Api, Service, future_time, schedule_body

# Every row the API may write; a refused request leaves them all as they were.
SNAPSHOT = {
    "apps": "SELECT a::text FROM apps a ORDER BY app_key",
    "schedules": "SELECT s::text FROM schedules s ORDER BY id",
    "runs": "SELECT r::text FROM runs r ORDER BY id",
}
AUTH = "{auth}"  # replaced by the app's valid Authorization header


@dataclasses.dataclass(frozen=True)
class Hostile:
    """One hostile request and the answer it must get. `body` None sends no body and no Content-Length."""

    name: str
    method: str
    path: str
    status: int
    code: int | None  # the envelope's code; None for a 2xx
    message: str | None = None  # the envelope's exact message, when the corpus pins it
    body: bytes | None = None
    headers: tuple[tuple[str, bytes | str], ...] = (("Authorization", AUTH),)

    def __str__(self) -> str:
        return self.name


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def valid_create(**overrides: Any) -> dict[str, Any]:
    # A month ahead: the corpus is built once at collection time, the suite runs for minutes.
    return schedule_body(time=future_time(30 * 86400), **overrides)


def create_with(raw_fragment: bytes, where: str = '"custom_args": "business info"') -> bytes:
    """A valid create body with one of its fields replaced by raw JSON text (a number JSON can carry but
    Python's json.dumps would not write, say)."""
    text = json_bytes(valid_create())
    assert where.encode() in text
    return text.replace(where.encode(), raw_fragment)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def basic(raw: bytes) -> bytes:
    return b"Basic " + base64.b64encode(raw)


def periodical(**fields: Any) -> dict[str, Any]:
    spec = {"start": "9998-12-31 23:59:59", "end": "9999-12-31 23:59:59", "time": "23:59:59",
            "time_unit": "day", "frequency": 1, "zone_type": 2}  # fmt: skip
    spec.update(fields)
    return {"periodical": spec}


AUTH_FAILED = (401, 28101, "Basic authentication failed.")
PAGE_TOO_LARGE = "page: must be at most 9223372036854775807, got "
OUT_OF_RANGE = "must be a number between -1.8e308 and 1.8e308"
CALENDAR = 'must be between 0001-01-02 00:00:00 and 9999-12-30 23:59:59, got "{}"'
S = "/v4/schedules"
ONE = S + "/{id}"

CORPUS: list[Hostile] = [
    # -- Authorization ------------------------------------------------------------------------------------
    Hostile("auth: latin-1 bytes after Basic", "GET", S, *AUTH_FAILED, headers=(("Authorization", b"Basic \xe9\xe9"),)),
    Hostile("auth: UTF-8 bytes after Basic", "GET", S, *AUTH_FAILED, headers=(("Authorization", "Basic é".encode()),)),
    Hostile("auth: non-ASCII secret", "GET", S, *AUTH_FAILED, headers=(("Authorization", basic("k:é".encode())),)),
    Hostile("auth: latin-1 bytes in the decoded pair", "GET", S, *AUTH_FAILED, headers=(("Authorization", basic(b"\xe9:\xff")),)),
    Hostile("auth: no colon", "GET", S, *AUTH_FAILED, headers=(("Authorization", basic(b"abc")),)),
    Hostile("auth: NUL in the decoded pair", "GET", S, *AUTH_FAILED, headers=(("Authorization", basic(b"\x00:\x00")),)),
    Hostile("auth: 8000 bytes of base64", "GET", S, *AUTH_FAILED, headers=(("Authorization", b"Basic " + b"QUFB" * 2000),)),
    Hostile("auth: Basic twice", "GET", S, *AUTH_FAILED, headers=(("Authorization", b"Basic Basic Basic"),)),
    Hostile("auth: none, on a POST with a body", "POST", S, *AUTH_FAILED, body=json_bytes(valid_create()), headers=()),
    # -- query string -------------------------------------------------------------------------------------
    Hostile("page: 4301 digits", "GET", S + "?page=" + "9" * 4301, 400, 28100, f'{PAGE_TOO_LARGE}"{"9" * 4301}"'),
    Hostile("page: 5000 digits", "GET", S + "?page=" + "1" * 5000, 400, 28100, f'{PAGE_TOO_LARGE}"{"1" * 5000}"'),
    Hostile("page: 1 after 4400 zeros", "GET", S + "?page=" + "0" * 4400 + "1", 200, None),
    Hostile("page: 2**63, beyond int64", "GET", S + "?page=9223372036854775808", 400, 28100,
            f'{PAGE_TOO_LARGE}"9223372036854775808"'),
    Hostile("page: int64's largest", "GET", S + "?page=9223372036854775807", 200, None),
    Hostile("page: -1", "GET", S + "?page=-1", 400, 28100, 'page: must be a positive integer, got "-1"'),
    Hostile("page: 0", "GET", S + "?page=0", 400, 28100, 'page: must be a positive integer, got "0"'),
    Hostile("page: 1e3", "GET", S + "?page=1e3", 400, 28100, 'page: must be a positive integer, got "1e3"'),
    Hostile("page: +1", "GET", S + "?page=%2B1", 400, 28100, 'page: must be a positive integer, got "+1"'),
    Hostile("page: Arabic-Indic digit", "GET", S + "?page=%D9%A3", 400, 28100, 'page: must be a positive integer, got "\u0663"'),
    Hostile("page: %ZZ", "GET", S + "?page=%ZZ", 400, 28100, 'page: must be a positive integer, got "%ZZ"'),
    Hostile("page: %FF (not UTF-8)", "GET", S + "?page=%FF", 400, 28100, 'page: must be a positive integer, got "\ufffd"'),
    Hostile("page: %00", "GET", S + "?page=%00", 400, 28100, 'page: must be a positive integer, got "\x00"'),
    Hostile("page: empty", "GET", S + "?page=", 400, 28100, 'page: must be a positive integer, got ""'),
    Hostile("page: repeated, the first counts", "GET", S + "?page=1&page=x", 200, None),
    Hostile("query: a thousand unknown keys", "GET", S + "?" + "&".join("k=%FF" for _ in range(1000)), 200, None),
    # -- paths --------------------------------------------------------------------------------------------
    Hostile("id: %00", "GET", S + "/%00", 404, 28104),
    Hostile("id: %ZZ", "GET", S + "/%ZZ", 404, 28104),
    Hostile("id: %FF", "DELETE", S + "/%FF", 404, 28104),
    Hostile("id: 8000 characters", "PUT", S + "/" + "a" * 8000, 404, 28104, body=b'{"name": "x"}'),
    Hostile("id: uuid with a slash inside", "GET", S + "/a%2Fb/msg-ids", 404, 28104),
    Hostile("path: doubled slashes", "GET", "//v4//schedules", 404, 28104, "//v4//schedules: no such resource"),
    Hostile("path: unknown under /v4/", "GET", "/v4/%FF%FE", 404, 28104),
    Hostile("path: absolute URI form", "GET", "http://elsewhere" + S, 200, None),
    # -- methods ------------------------------------------------------------------------------------------
    Hostile("method: PATCH", "PATCH", S, 405, 28100, "method: PATCH is not allowed on /v4/schedules"),
    Hostile("method: OPTIONS", "OPTIONS", ONE, 405, 28100),
    Hostile("method: TRACE", "TRACE", S, 405, 28100),
    Hostile("method: POST on /healthz", "POST", "/healthz", 405, 28100, headers=()),
    # -- bodies: framing and encoding ---------------------------------------------------------------------
    Hostile("body: gzip that is not gzip", "POST", S, 400, 28100, "body: cannot be read as sent (Can not decode content-encoding: gzip)", body=b"not gzip at all",
            headers=(("Authorization", AUTH), ("Content-Encoding", "gzip"))),
    Hostile("body: deflate that is not deflate", "PUT", ONE, 400, 28100, "body: cannot be read as sent (Can not decode content-encoding: deflate)", body=b"xx",
            headers=(("Authorization", AUTH), ("Content-Encoding", "deflate"))),
    Hostile("body: gzip cut short", "POST", S, 400, 28100, body=gzip.compress(json_bytes(valid_create()))[:-12],
            headers=(("Authorization", AUTH), ("Content-Encoding", "gzip"))),
    Hostile("body: gzip bomb past 64 KiB", "POST", S, 413, 28100, "body: must be at most 65536 bytes",
            body=gzip.compress(b" " * (4 * 1024 * 1024)), headers=(("Authorization", AUTH), ("Content-Encoding", "gzip"))),
    Hostile("body: Content-Length past 64 KiB, no body sent", "POST", S, 413, 28100, "body: must be at most 65536 bytes",
            headers=(("Authorization", AUTH), ("Content-Length", "70000"))),
    Hostile("body: Content-Type multipart", "POST", S, 400, 28100, body=b"--x\r\n\r\n--x--",
            headers=(("Authorization", AUTH), ("Content-Type", "multipart/form-data; boundary=x"))),
    # -- bodies: JSON -------------------------------------------------------------------------------------
    Hostile("json: invalid UTF-8", "POST", S, 400, 28100, "body: request data is not JSON (not UTF-8)", body=b'{"name": "\xff"}'),
    Hostile("json: NaN", "POST", S, 400, 28100, "body: request data is not JSON (NaN is not a JSON number)",
            body=create_with(b'"custom_args": NaN')),
    Hostile("json: 1e400 (a float past double)", "POST", S, 400, 28100,
            f"push.custom_args: {OUT_OF_RANGE}", body=create_with(b'"custom_args": 1e400')),
    Hostile("json: -1e400 inside the notification", "POST", S, 400, 28100,
            f"push.body.notification.badge: {OUT_OF_RANGE}",
            body=create_with(b'"alert": "Api web timed task", "badge": -1e400', '"alert": "Api web timed task"')),
    Hostile("json: 1e400 in a PUT", "PUT", ONE, 400, 28100, f"push.body.notification.alert: {OUT_OF_RANGE}",
            body=b'{"push": {"to": "all", "body": {"platform": "all", "notification": {"alert": 1e400}}}}'),
    Hostile("json: an integer of 4301 digits", "POST", S, 400, 28100,
            body=create_with(b'"custom_args": ' + b"9" * 4301)),
    Hostile("json: an integer of 4000 digits, past int64 and numeric's speed", "POST", S, 200, None,
            body=create_with(b'"custom_args": ' + b"9" * 4000)),
    Hostile("json: time_to_live past int64", "POST", S, 400, 28100,
            "push.body.options.time_to_live: must be between 0 and 1296000, got 99999999999999999999999",
            body=create_with(b'"time_to_live": 99999999999999999999999', '"time_to_live": 60')),
    Hostile("json: frequency past int64", "POST", S, 400, 28100,
            "trigger.periodical.frequency: must be 1..100 (every Nth day, week or month), got 99999999999999999999999",
            body=json_bytes(valid_create(trigger=periodical(frequency=7, start="2027-01-01 00:00:00", end="2027-02-01 00:00:00")))
            .replace(b'"frequency": 7', b'"frequency": 99999999999999999999999')),
    Hostile("json: nested 100 deep is fine", "POST", S, 200, None, body=create_with(b'"custom_args": ' + nested(98))),
    Hostile("json: nested 101 deep", "POST", S, 400, 28100, "push.custom_args: must be nested at most 100 deep",
            body=create_with(b'"custom_args": ' + nested(99))),
    Hostile("json: nested 960 deep", "POST", S, 400, 28100, body=create_with(b'"custom_args": ' + nested(960))),
    Hostile("json: nested 970 deep", "POST", S, 400, 28100, body=create_with(b'"custom_args": ' + nested(970))),
    Hostile("json: nested 975 deep in a PUT", "PUT", ONE, 400, 28100,
            body=b'{"push": {"to": "all", "body": {"platform": "all", "notification": {"alert": ' + nested(975) + b"}}}}"),
    Hostile("json: nested 10000 deep", "POST", S, 400, 28100, "body: request data is not JSON (nested too deeply)", body=nested(10000)),
    Hostile("json: NUL in a key", "POST", S, 400, 28100, "push.custom_args.a\x00: must not contain the NUL character (\\u0000)",
            body=create_with(b'"custom_args": {"a\\u0000": 1}')),
    Hostile("json: lone surrogate in a value", "POST", S, 400, 28100,
            "push.custom_args: must be valid Unicode, got a lone surrogate", body=create_with(b'"custom_args": "\\udfff"')),
    Hostile("json: duplicate keys, the last counts", "PUT", ONE, 400, 28100, "name: must be a string",
            body=b'{"name": "fine", "name": 5}'),
    Hostile("json: top-level string", "POST", S, 400, 28100, "body: must be a JSON object", body=b'"x"'),
    Hostile("json: top-level null", "PUT", ONE, 400, 28100, "body: must be a JSON object", body=b"null"),
    Hostile("json: empty", "PUT", ONE, 400, 28100, body=b""),
    # -- times the calendar cannot hold -------------------------------------------------------------------
    Hostile("time: 9999-12-31 23:59:59, zone_type 2", "POST", S, 400, 28100,
            "trigger.single.time: " + CALENDAR.format("9999-12-31 23:59:59"),
            body=json_bytes(valid_create(trigger={"single": {"time": "9999-12-31 23:59:59", "zone_type": 2}}))),
    Hostile("time: 0001-01-01 00:00:00, zone_type 2", "POST", S, 400, 28100,
            "trigger.single.time: " + CALENDAR.format("0001-01-01 00:00:00"),
            body=json_bytes(valid_create(trigger={"single": {"time": "0001-01-01 00:00:00", "zone_type": 2}}))),
    Hostile("time: 9999-12-30 23:59:59, zone_type 2: over the horizon", "POST", S, 400, 28100,
            body=json_bytes(valid_create(trigger={"single": {"time": "9999-12-30 23:59:59", "zone_type": 2}}))),
    Hostile("time: 9999-12-31 23:59:59 in a PUT", "PUT", ONE, 400, 28100, "trigger.single.time: " + CALENDAR.format("9999-12-31 23:59:59"),
            body=json_bytes({"trigger": {"single": {"time": "9999-12-31 23:59:59", "zone_type": 1}}})),
    Hostile("periodical: ending 9999-12-31 23:59:59, zone_type 2", "POST", S, 400, 28100,
            "trigger.periodical.end: " + CALENDAR.format("9999-12-31 23:59:59"), body=json_bytes(valid_create(trigger=periodical()))),
]

# Refused by aiohttp's HTTP parser, before the application runs (the envelope only under `serve`: see above).
MALFORMED_HTTP: list[Hostile] = [
    Hostile("parser: control byte in a header", "GET", S, 400, None, headers=(("Authorization", b"Basic \x01\x02"),)),
    Hostile("parser: DEL in a header", "GET", S, 400, None, headers=(("X-Odd", b"a\x7fb"),)),
    Hostile("parser: Content-Length not a number", "POST", S, 400, None, headers=(("Content-Length", "abc"),)),
    Hostile("parser: Content-Length past any integer", "POST", S, 400, None,
            headers=(("Content-Length", "99999999999999999999999"),)),
    Hostile("parser: Content-Length with Transfer-Encoding", "POST", S, 400, None, body=b"0\r\n\r\n",
            headers=(("Transfer-Encoding", "chunked"),)),
    Hostile("parser: a method no registry knows", "FOO", S, 400, None),
    Hostile("parser: a header of 9000 bytes", "GET", S, 400, None, headers=(("X-Long", "a" * 9000),)),
]


@dataclasses.dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes


async def send_raw(base_url: str, request: bytes) -> RawReply:
    """Write `request` as is on a new connection and read the answer until the server closes it."""
    url = urllib.parse.urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        # By Content-Length, not until the close: after an early answer the server may linger on the body.
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout=10)
    finally:
        writer.close()
    return RawReply(int(status_line.split(" ")[1]), headers, body)


def render(case: Hostile, auth_header: str, schedule_id: str) -> bytes:
    header_lines = [("Host", "service"), ("Connection", "close")]
    for key, value in case.headers:
        header_lines.append((key, auth_header if value == AUTH else value))
    if case.body is not None:
        header_lines.append(("Content-Length", str(len(case.body))))
    raw = f"{case.method} {case.path.replace('{id}', schedule_id)} HTTP/1.1\r\n".encode()
    for key, value in header_lines:
        raw += key.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")) + b"\r\n"
    return raw + b"\r\n" + (case.body or b"")


async def snapshot(connection: asyncpg.Connection) -> dict[str, list[str]]:
    return {table: [row[0] for row in await connection.fetch(query)] for table, query in SNAPSHOT.items()}


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


def wrong_answer(case: Hostile, reply: RawReply) -> str | None:
    """What is wrong with `reply` as the answer to `case`, or None."""
    if reply.status != case.status:
        return f"status {reply.status}, not {case.status}: {reply.body[:300]!r}"
    if not reply.headers.get("content-type", "").startswith("application/json"):
        return f"content type {reply.headers.get('content-type')}: {reply.body[:300]!r}"
    if case.code is None:
        return None
    envelope = json.loads(reply.body)
    if list(envelope) != ["error"] or set(envelope["error"]) != {"code", "message"}:
        return f"not the error envelope: {envelope}"
    if envelope["error"]["code"] != case.code:
        return f"code {envelope['error']['code']}, not {case.code}: {envelope}"
    if case.message is not None and envelope["error"]["message"] != case.message:
        return f"message {envelope['error']['message'][:300]!r}, not {case.message[:300]!r}"
    if case.status == 401 and reply.headers.get("www-authenticate") != 'Basic realm="schedules"':
        return "no WWW-Authenticate"
    if case.status == 405 and not reply.headers.get("allow"):
        return "no Allow"
    return None


async def seed(service: Service) -> tuple[Api, str]:
    """An app with one valid schedule, the target of the corpus's `{id}`."""
    api = await service.new_app()
    created = await api.create(valid_create())
    assert created.status == 200, created.body
    return api, created.json["schedule_id"]


async def wrong_answers(base_url: str, auth_header: str, schedule_id: str, database: asyncpg.Connection) -> list[str]:
    """Send the whole corpus in order; each entry that gets a wrong answer or changes a row, and why."""
    wrong = []
    for case in CORPUS:
        before = await snapshot(database)
        reply = await send_raw(base_url, render(case, auth_header, schedule_id))
        problem = wrong_answer(case, reply)
        # A 200 to a write is the one answer allowed to change rows (the corpus's few valid extremes).
        if problem is None and (reply.status != 200 or case.method == "GET") and await snapshot(database) != before:
            problem = "changed the database"
        if problem is not None:
            wrong.append(f"{case.name}: {problem}")
    return wrong


async def test_hostile_requests_get_their_answers_and_change_nothing(service: Service, database: asyncpg.Connection) -> None:
    """The whole corpus against one service (tests/contract sends it to the real process too)."""
    api, schedule_id = await seed(service)
    wrong = await wrong_answers(service.base_url, api.auth.header, schedule_id, database)
    assert not wrong, "\n".join(wrong)


async def test_no_nesting_depth_gets_a_500(service: Service, database: asyncpg.Connection) -> None:
    """Every depth from just past the limit to past Python's recursion limit: where a body parsed but its
    encoding (to jsonb, to the answer) recursed deeper than the parse had, a window of depths got a 500, and
    where that window lies depends on how deep the stack already is."""
    api, schedule_id = await seed(service)
    before = await snapshot(database)
    statuses: dict[int, list[int]] = {}
    for depth in range(101, 1101):
        body = create_with(b'"custom_args": ' + nested(depth - 2))
        case = Hostile(f"nested {depth}", "POST", S, 400, 28100, body=body)
        reply = await send_raw(service.base_url, render(case, api.auth.header, schedule_id))
        statuses.setdefault(reply.status, []).append(depth)
    assert list(statuses) == [400], {status: (depths[0], depths[-1], len(depths)) for status, depths in statuses.items()}
    assert await snapshot(database) == before


async def test_malformed_http_is_a_400_from_the_parser(service: Service, database: asyncpg.Connection) -> None:
    api, schedule_id = await seed(service)
    before = await snapshot(database)
    statuses = {}
    for case in MALFORMED_HTTP:
        statuses[case.name] = (await send_raw(service.base_url, render(case, api.auth.header, schedule_id))).status
    assert statuses == {case.name: case.status for case in MALFORMED_HTTP}
    assert await snapshot(database) == before
