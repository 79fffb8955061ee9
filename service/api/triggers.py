"""Run now, the polling pattern, and webhooks (issue 13): runs a caller triggers, beside the v4 endpoints.

`POST /v4/schedules/{id}/run` and the `/hooks/{token}` URLs queue a run of one push per parameter set
(service.domain.params) through the store's one statement (sql/0010 trigger_run); the engine sends them as it
sends retries. A run's status URL answers 202 while any push is under way and 200 once all have ended, the
same body on every later poll. The /hooks/ paths carry no Basic auth: the token is the credential, found by
its digest, and only the route's template (`/hooks/{token}`) reaches a log line or a metric.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from aiohttp import web

from service.api import keys
from service.api.handlers import now_utc, ok, parse_json, read_body, schedule_id_of
from service.domain import credentials, errors, models, params, types

routes = web.RouteTableDef()

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255


def _idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header: 1..255 visible ASCII characters (`!` to `~`, no space), given once."""
    given = request.headers.getall(IDEMPOTENCY_HEADER, [])
    if not given:
        return None
    key = given[0]
    if len(given) > 1:
        raise errors.InvalidParameter(f"{IDEMPOTENCY_HEADER}: must be given at most once, got {len(given)}")
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not all("!" <= char <= "~" for char in key):
        raise errors.InvalidParameter(
            f"{IDEMPOTENCY_HEADER}: must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
        )
    return key


def _run_id(request: web.Request) -> uuid.UUID:
    """A malformed run id names no run: 404, as an unknown one."""
    try:
        return uuid.UUID(request.match_info["run_id"])
    except ValueError:
        raise errors.ScheduleNotFound("run: no such run of this task") from None


def _status(
    progress: types.RunProgress, location: str, triggering: keys.Triggering, *, started: bool = False
) -> web.Response:
    """The polling pattern: 200 with the outcome once every push ended; else 202 with where to look again
    (Location) and when (Retry-After). `started`: the answer to the POST that started the run, always 202."""
    response = ok(progress.to_wire())
    if started or not progress.ended:
        response.set_status(202)
        response.headers["Location"] = triggering.url(location)
        response.headers["Retry-After"] = str(triggering.poll_seconds)
    return response


async def _started(
    request: web.Request,
    app_key: str,
    schedule_id: types.ScheduleId,
    run_id: uuid.UUID,
    location: str,
) -> web.Response:
    """The answer to a POST that started (or found, by its Idempotency-Key) a run: 202 with the status URL, even
    when the run has already ended (the poller then gets the 200 from it)."""
    triggering = request.app[keys.TRIGGERING]
    progress = await request.app[keys.SCHEDULES].run_progress(app_key, schedule_id, run_id)
    if progress is None:  # purged meanwhile: only an Idempotency-Key's old run can be
        raise errors.ScheduleNotFound("run: no such run of this task")
    return _status(progress, location, triggering, started=True)


def _triggered_run_id(triggered: types.Triggered) -> uuid.UUID:
    if triggered.outcome == "limited":
        seconds = max(1, math.ceil(triggered.retry_after or 1))
        raise errors.TooManyCalls(
            f"webhook: the task had its HOOK_RATE_PER_MINUTE calls this minute; try again in {seconds} s",
            retry_after=seconds,
        )
    assert triggered.run_id is not None
    return triggered.run_id


# -- run now and a run's status (Basic auth, as every /v4 call) ---------------------------------------------


@routes.post("/v4/schedules/{schedule_id}/run")
async def run_now(request: web.Request) -> web.Response:
    """A run of the task now: one push, or one per parameter set; on a disabled task too. It does not move the
    task's next fire and has no zone_type 2 waves."""
    app = keys.current_app(request)
    schedule_id = schedule_id_of(request)
    store = request.app[keys.SCHEDULES]
    raw = await read_body(request)
    schedule = await store.get_schedule(app.app_key, schedule_id, now_utc())
    if schedule is None:
        raise errors.ScheduleNotFound()
    body: Any = None  # no body: no parameters
    if raw.strip():
        body = parse_json(raw)
        if not isinstance(body, dict):  # `null` too: a body sent is an object
            raise errors.InvalidParameter("body: must be a JSON object holding QueryParameters (or params)")
    sets = params.parse_sets(body, schedule.params, schedule.push, lenient=False)
    triggered = await store.trigger_run(schedule_id, "run_now", sets, _idempotency_key(request), None)
    run_id = _triggered_run_id(triggered)
    return await _started(request, app.app_key, schedule_id, run_id, f"/v4/schedules/{schedule_id}/runs/{run_id}")


@routes.get("/v4/schedules/{schedule_id}/runs/{run_id}")
async def run_status(request: web.Request) -> web.Response:
    """Where a run stands: a triggered run, or any run of the task's history (one push)."""
    app = keys.current_app(request)
    schedule_id, run_id = schedule_id_of(request), _run_id(request)
    progress = await request.app[keys.SCHEDULES].run_progress(app.app_key, schedule_id, run_id)
    if progress is None:
        raise errors.ScheduleNotFound("run: no such run of this task")
    return _status(progress, f"/v4/schedules/{schedule_id}/runs/{run_id}", request.app[keys.TRIGGERING])


# -- a task's webhook (Basic auth) ------------------------------------------------------------------------


@routes.post("/v4/schedules/{schedule_id}/webhook")
async def create_webhook(request: web.Request) -> web.Response:
    """Create or rotate the task's webhook token: shown in this answer only, stored as its digest."""
    app = keys.current_app(request)
    schedule_id = schedule_id_of(request)
    token = credentials.new_webhook_token()
    made = await request.app[keys.SCHEDULES].set_webhook(
        app.app_key, schedule_id, credentials.digest(token), now_utc()
    )
    if made is None:
        raise errors.ScheduleNotFound()
    triggering = request.app[keys.TRIGGERING]
    return ok(
        {
            "schedule_id": str(schedule_id),
            "token": token,
            "url": triggering.url(f"/hooks/{token}"),
            "poll_url": triggering.url(f"/hooks/{token}/poll"),
            "created_at": types.wire_instant(made),
        }
    )


@routes.get("/v4/schedules/{schedule_id}/webhook")
async def show_webhook(request: web.Request) -> web.Response:
    """The task's webhook, and since when it exists; never the token. 404 when it has none: a revoked
    webhook reads as gone, as a deleted resource does (what generated clients and schemathesis expect)."""
    app = keys.current_app(request)
    schedule_id = schedule_id_of(request)
    schedule = await request.app[keys.SCHEDULES].get_schedule(app.app_key, schedule_id, now_utc())
    if schedule is None:
        raise errors.ScheduleNotFound()
    made = schedule.webhook_created_at
    if made is None:
        raise errors.ScheduleNotFound("The schedule has no webhook: create one with POST on the same path.")
    return ok({"schedule_id": str(schedule_id), "exists": True, "created_at": types.wire_instant(made)})


@routes.delete("/v4/schedules/{schedule_id}/webhook")
async def revoke_webhook(request: web.Request) -> web.Response:
    """Revoke the task's webhook: its URLs answer 404 from now on, on every replica (nothing is cached)."""
    app = keys.current_app(request)
    schedule_id = schedule_id_of(request)
    if not await request.app[keys.SCHEDULES].clear_webhook(app.app_key, schedule_id, now_utc()):
        raise errors.ScheduleNotFound()
    return ok({"schedule_id": str(schedule_id), "exists": False})


# -- the webhook URLs (no Basic auth: the token is the credential) ---------------------------------------


async def _hook_target(request: web.Request) -> tuple[str, types.HookTarget]:
    """The token of the path and the task it opens; 404 for a token of another shape (no query), unknown or
    revoked, or whose task was deleted."""
    token = request.match_info["token"]
    target = None
    if credentials.could_be_webhook_token(token):
        target = await request.app[keys.SCHEDULES].find_webhook(credentials.digest(token), now_utc())
    if target is None:
        raise errors.ScheduleNotFound("webhook: unknown or revoked")
    return token, target


def _hook_body(raw: bytes) -> Any:
    """A webhook's body: an empty one, or one that is not JSON, means no parameters; of a JSON object only the
    parameters are read (and checked as storable), whatever else the caller sends."""
    if not raw.strip():
        return None
    try:
        body = parse_json(raw, check=False)
    except errors.InvalidParameter:
        return None
    if isinstance(body, dict):
        models.check_storable({key: body[key] for key in params.BODY_KEYS if key in body})
    return body


async def _trigger_by_hook(request: web.Request) -> tuple[str, types.HookTarget, uuid.UUID]:
    token, target = await _hook_target(request)
    raw = await read_body(request)
    if not target.app_active:
        raise errors.RunRefused("webhook: the task's app is disabled")
    if not target.valid:
        raise errors.RunRefused("webhook: the task has expired")
    if not target.enabled:
        raise errors.RunRefused("webhook: the task is disabled")
    sets = params.parse_sets(_hook_body(raw), target.params, target.push, lenient=True)
    rate = request.app[keys.TRIGGERING].hook_rate_per_minute
    triggered = await request.app[keys.SCHEDULES].trigger_run(
        target.schedule_id, "webhook", sets, _idempotency_key(request), rate or None
    )
    return token, target, _triggered_run_id(triggered)


@routes.post("/hooks/{token}")
async def hook(request: web.Request) -> web.Response:
    """Fire and forget: 200 with the run's id once the run is durably queued."""
    _, _, run_id = await _trigger_by_hook(request)
    return ok({"run_id": str(run_id)})


@routes.post("/hooks/{token}/poll")
async def hook_poll(request: web.Request) -> web.Response:
    """The asynchronous polling pattern: 202 with the run's status URL (Location) and Retry-After."""
    token, target, run_id = await _trigger_by_hook(request)
    return await _started(request, target.app_key, target.schedule_id, run_id, f"/hooks/{token}/runs/{run_id}")


@routes.get("/hooks/{token}/runs/{run_id}")
async def hook_run_status(request: web.Request) -> web.Response:
    """A run's status through the webhook's URL: as GET /v4/schedules/{id}/runs/{run_id}."""
    token, target = await _hook_target(request)
    run_id = _run_id(request)
    progress = await request.app[keys.SCHEDULES].run_progress(target.app_key, target.schedule_id, run_id)
    if progress is None:
        raise errors.ScheduleNotFound("run: no such run of this task")
    return _status(progress, f"/hooks/{token}/runs/{run_id}", request.app[keys.TRIGGERING])
