"""The v4 schedules endpoints. Each handler reads, validates, calls the store once, and answers."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from typing import Any

from aiohttp import web

from service.api import keys
from service.domain import errors, models, schedules, types, wirejson

PAGE_SIZE = 50
MAX_OFFSET = 2**62
# The largest page a client's JSON integer can hold (int64), as openapi.yaml says.
MAX_PAGE = 2**63 - 1

routes = web.RouteTableDef()


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_body(request: web.Request) -> bytes:
    """The body's bytes, at most client_max_size (413 past it), decoded as its Content-Encoding says."""
    if (request.content_length or 0) > request.client_max_size:
        # Refused before reading: a body announced past the limit need not arrive (or be waited for) first.
        raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=request.content_length)
    try:
        return await request.read()  # aiohttp answers 413 past client_max_size
    except web.RequestPayloadError as exc:  # a Content-Encoding that does not decode, chunks that do not parse
        reason = getattr(exc.__cause__, "message", None) or "malformed"
        raise errors.InvalidParameter(f"body: cannot be read as sent ({reason})") from None


def parse_json(raw: bytes, *, check: bool = True) -> Any:
    """The body as JSON whatever the Content-Type: the seed's own PUT example sends form-urlencoded JSON.
    `check`: refuse what cannot be stored (models.check_storable); the caller checks the parts it keeps."""
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        detail = exc.msg
    except UnicodeDecodeError:
        detail = "not UTF-8"
    except RecursionError:
        detail = "nested too deeply"
    except ValueError as exc:  # NaN, Infinity: PostgreSQL's jsonb has no such numbers
        detail = str(exc)
    else:
        if check:
            models.check_storable(data)
        return data
    raise errors.InvalidParameter(f"body: request data is not JSON ({detail})")


async def _json_body(request: web.Request) -> Any:
    return parse_json(await read_body(request))


def _page(text: str) -> int:
    """`page`: a positive integer up to MAX_PAGE, leading zeros allowed."""
    if not text.isascii() or not text.isdigit() or not text.strip("0"):
        raise errors.InvalidParameter(f'page: must be a positive integer, got "{text}"')
    significant = text.lstrip("0")
    # Measured before converted: Python refuses to convert a string of more than 4300 digits.
    if len(significant) > len(str(MAX_PAGE)) or int(significant) > MAX_PAGE:
        raise errors.InvalidParameter(f'page: must be at most {MAX_PAGE}, got "{text}"')
    return int(significant)


_SORT_KEYS: tuple[types.SortKey, ...] = ("created", "name", "next_run", "last_run")
_BOOLEANS = {"true": True, "false": False}


def _name_successor(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`, byte-wise (UTF-8 orders as code points):
    the prefix with its last character raised by one. None: no such string (all characters are the highest)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:  # surrogates are not characters: the next one is past them
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _list_query(query: Any) -> types.ListQuery:
    """The list's extension parameters: sort=name|next_run|last_run|created (`-` for descending), name= (exact),
    name_prefix=, enabled=true|false, kind=single|periodical|cron|interval. A bad value is 28100 naming it."""
    values: dict[str, Any] = {}
    for parameter in ("sort", "name", "name_prefix", "enabled", "kind"):
        given = query.getall(parameter, [])
        if len(given) > 1:
            raise errors.InvalidParameter(f"{parameter}: must be given at most once, got {len(given)} values")
        if given:
            models.check_storable({parameter: given[0]})
            values[parameter] = given[0]
    fields: dict[str, Any] = {}
    if "sort" in values:
        sort = values["sort"]
        key = sort.removeprefix("-")
        if key not in _SORT_KEYS:
            raise errors.InvalidParameter(
                f'sort: must be one of {", ".join(_SORT_KEYS)}, with "-" before it for descending, got "{sort}"'
            )
        fields["sort"], fields["descending"] = key, sort.startswith("-")
    name_from, name_below = "", types.NAME_ABOVE_ALL
    if "name" in values:
        name = values["name"]
        if not name or len(name.encode("utf-8")) > models.MAX_NAME_BYTES:
            raise errors.InvalidParameter(f"name: must be 1..{models.MAX_NAME_BYTES} UTF-8 bytes, got \"{name}\"")
        # name = X is the range [X, X + U+0001): a name holds no control character.
        fields["name"], name_from, name_below = name, name, name + "\x01"
    if "name_prefix" in values:
        prefix = values["name_prefix"]
        if not prefix or len(prefix.encode("utf-8")) > models.MAX_NAME_BYTES:
            raise errors.InvalidParameter(
                f"name_prefix: must be 1..{models.MAX_NAME_BYTES} UTF-8 bytes, got \"{prefix}\""
            )
        name_from = max(name_from, prefix)
        name_below = min(name_below, _name_successor(prefix) or name_below)
    fields["name_from"], fields["name_below"] = name_from, name_below
    if "enabled" in values:
        if values["enabled"] not in _BOOLEANS:
            raise errors.InvalidParameter(f'enabled: must be true or false, got "{values["enabled"]}"')
        fields["enabled"] = _BOOLEANS[values["enabled"]]
    if "kind" in values:
        if values["kind"] not in types.TRIGGER_KINDS:
            raise errors.InvalidParameter(
                f'kind: must be one of {", ".join(types.TRIGGER_KINDS)}, got "{values["kind"]}"'
            )
        fields["kind"] = values["kind"]
    return types.ListQuery(**fields)


def schedule_id_of(request: web.Request) -> types.ScheduleId:
    """A malformed id names no task: 404, exactly like an unknown one."""
    try:
        return types.ScheduleId(uuid.UUID(request.match_info["schedule_id"]))
    except ValueError:
        raise errors.ScheduleNotFound() from None


def ok(payload: Any) -> web.Response:
    return web.Response(body=wirejson.dumps(payload), content_type="application/json", charset="utf-8")


@routes.post("/v4/schedules")
async def create_schedule(request: web.Request) -> web.Response:
    app = keys.current_app(request)
    raw = await _json_body(request)
    body: models.ScheduleCreate = models.parse(models.ScheduleCreate, raw)
    now = now_utc()
    values = schedules.values_for_create(
        body, raw["push"], app.time_zone, now, request.app[keys.WAVE_OFFSETS]
    )
    schedule_id, name = await request.app[keys.SCHEDULES].create_schedule(app.app_key, values, body.cid, now)
    return ok({"schedule_id": str(schedule_id), "name": name})


@routes.get("/v4/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    app = keys.current_app(request)
    page = _page(request.query.get("page", "1"))
    query = _list_query(request.query)
    # A page far past any real one is simply empty; the clamp keeps OFFSET inside PostgreSQL's bigint.
    offset = min((page - 1) * PAGE_SIZE, MAX_OFFSET)
    total, found = await request.app[keys.SCHEDULES].list_schedules(app.app_key, now_utc(), PAGE_SIZE, offset, query)
    return ok(
        {
            "total_count": total,
            "total_pages": math.ceil(total / PAGE_SIZE),
            "page": page,
            "schedules": [schedule.to_wire() for schedule in found],
        }
    )


@routes.post("/v4/schedules/preview")
async def preview_trigger(request: web.Request) -> web.Response:
    """Extension: the next fires of a trigger not yet stored, validated as a create would."""
    app = keys.current_app(request)
    count = schedules.parse_count(request.query.get("count"))
    raw = await _json_body(request)
    body: models.TriggerPreview = models.parse(models.TriggerPreview, raw)
    return ok(schedules.preview(body, app.time_zone, now_utc(), request.app[keys.WAVE_OFFSETS], count))


@routes.route("*", "/v4/schedules/preview")
async def preview_other_methods(request: web.Request) -> web.Response:
    """`preview` is not a schedule id: any other method is 405 with `Allow: POST`, not the GET, PUT and DELETE
    of /v4/schedules/{schedule_id}, which aiohttp would otherwise also advertise for this path."""
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


@routes.get("/v4/schedules/{schedule_id}")
async def get_schedule(request: web.Request) -> web.Response:
    app = keys.current_app(request)
    schedule = await request.app[keys.SCHEDULES].get_schedule(app.app_key, schedule_id_of(request), now_utc())
    if schedule is None:
        raise errors.ScheduleNotFound()
    return ok(schedule.to_wire())


@routes.put("/v4/schedules/{schedule_id}")
async def update_schedule(request: web.Request) -> web.Response:
    app = keys.current_app(request)
    schedule_id = schedule_id_of(request)
    raw = await _json_body(request)
    body: models.ScheduleUpdate = models.parse(models.ScheduleUpdate, raw)
    now = now_utc()
    zone, offsets = app.time_zone, request.app[keys.WAVE_OFFSETS]
    updated = await request.app[keys.SCHEDULES].update_schedule(
        app.app_key,
        schedule_id,
        now,
        lambda current: schedules.values_for_update(current, body, raw, zone, now, offsets),
        in_flight_wait=request.app[keys.IN_FLIGHT_WAIT],
    )
    return ok(updated.to_wire())


@routes.delete("/v4/schedules/{schedule_id}")
async def delete_schedule(request: web.Request) -> web.Response:
    app = keys.current_app(request)
    deleted = await request.app[keys.SCHEDULES].delete_schedule(
        app.app_key, schedule_id_of(request), now_utc(), in_flight_wait=request.app[keys.IN_FLIGHT_WAIT]
    )
    if not deleted:
        raise errors.ScheduleNotFound()
    return web.Response(status=200)


@routes.get("/v4/schedules/{schedule_id}/msg-ids")
@routes.get("/v4/schedules/{schedule_id}/msg_ids")
async def schedule_msg_ids(request: web.Request) -> web.Response:
    app = keys.current_app(request)
    msg_ids = await request.app[keys.SCHEDULES].sent_msg_ids(app.app_key, schedule_id_of(request))
    if msg_ids is None:
        raise errors.ScheduleNotFound()
    # MsgIds repeats the list: EngageLab's published SDKs read that key.
    return ok({"count": len(msg_ids), "msgids": msg_ids, "MsgIds": msg_ids})


@routes.get("/v4/schedules/{schedule_id}/upcoming")
async def schedule_upcoming(request: web.Request) -> web.Response:
    """Extension: the next fires of a stored task, in the zone it keeps; none while it is disabled."""
    app = keys.current_app(request)
    schedule_id = schedule_id_of(request)
    count = schedules.parse_count(request.query.get("count"))
    now = now_utc()
    schedule = await request.app[keys.SCHEDULES].get_schedule(app.app_key, schedule_id, now)
    if schedule is None:
        raise errors.ScheduleNotFound()
    answer = schedules.upcoming(
        schedule.trigger, schedule.time_zone, now, request.app[keys.WAVE_OFFSETS], count if schedule.enabled else 0
    )
    return ok({"schedule_id": str(schedule_id), **answer})


@routes.get("/v4/schedules/{schedule_id}/runs")
async def schedule_runs(request: web.Request) -> web.Response:
    """Extension: the task's runs, newest first, 50 a page; expired tasks answer, deleted ones do not."""
    app = keys.current_app(request)
    schedule_id = schedule_id_of(request)
    page = _page(request.query.get("page", "1"))
    offset = min((page - 1) * PAGE_SIZE, MAX_OFFSET)
    found = await request.app[keys.SCHEDULES].schedule_runs(app.app_key, schedule_id, PAGE_SIZE, offset)
    if found is None:
        raise errors.ScheduleNotFound()
    total, runs = found
    return ok(
        {
            "total_count": total,
            "total_pages": math.ceil(total / PAGE_SIZE),
            "page": page,
            "runs": [run.to_wire() for run in runs],
        }
    )
