"""Request observation, authentication and the one error envelope, for every path: handlers only raise
domain errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from service import metrics
from service.api import keys
from service.domain import credentials, errors

log = logging.getLogger(__name__)
# One line per request; its fields (see observe_middleware) are what the JSON log formatter emits.
access_log = logging.getLogger("service.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 64 * 1024
# Any other method is counted as "other": a client must not be able to grow the metrics' label sets.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Seconds a client should wait before retrying a 503 (the database away): long enough for a failover's first
# steps, short enough that a blip costs a second.
RETRY_AFTER_UNAVAILABLE = "1"
# nginx's convention for "the client closed the connection before the answer".
CLIENT_CLOSED = 499


def route_template(request: web.BaseRequest) -> str:
    """The matched route's template (`/v4/schedules/{schedule_id}`), never the path: ids are app data."""
    resource = request.match_info.route.resource
    return metrics.UNMATCHED_ROUTE if resource is None else resource.canonical


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: one metrics sample and one log line per request, with the app key once authenticated, and
    the count of requests in flight that a graceful shutdown waits for.

    It never reads the Authorization header: the secret cannot reach a log line or a label.
    """
    started = time.perf_counter()
    status = 500
    lifecycle = request.app[keys.LIFECYCLE]
    lifecycle.request_started()
    try:
        response = await handler(request)
        status = response.status
        if lifecycle.state == "draining":
            response.force_close()  # answer, then close: the client reconnects to another replica
        return response
    except web.HTTPException as exc:  # redirects; errors_middleware turns every error into a response
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        lifecycle.request_finished()
        seconds = time.perf_counter() - started
        method = request.method if request.method in _KNOWN_METHODS else "other"
        route = route_template(request)
        metrics.record_request(method, route, status, seconds)
        app = request.get(keys.CURRENT_APP)
        access_log.info(
            "%s %s %d %.1f ms",
            method,
            route,
            status,
            seconds * 1000,
            extra={
                "event": "request",
                "method": method,
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 2),
                "app_key": None if app is None else app.app_key,
            },
        )


def error_response(error: errors.ServiceError) -> web.Response:
    response = web.json_response(
        {"error": {"code": error.code, "message": error.message}}, status=error.http_status
    )
    if isinstance(error, errors.AuthenticationFailed):
        response.headers["WWW-Authenticate"] = 'Basic realm="schedules"'
    if isinstance(error, errors.DatabaseUnavailable):
        response.headers["Retry-After"] = RETRY_AFTER_UNAVAILABLE
    if isinstance(error, errors.TooManyCalls):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> errors.ServiceError:
    """aiohttp's own answers (no route, wrong method, body too large) in our envelope."""
    if exc.status == 404:
        error: errors.ServiceError = errors.ScheduleNotFound(f"{request.path}: no such resource")
    elif exc.status == 405:
        error = errors.InvalidParameter(f"method: {request.method} is not allowed on {request.path}")
    elif exc.status == 413:
        error = errors.InvalidParameter(f"body: must be at most {MAX_BODY_BYTES} bytes")
    elif exc.status < 500:
        error = errors.InvalidParameter(exc.reason)
    else:
        error = errors.InternalError()
    error.http_status = exc.status
    return error


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except errors.ServiceError as error:
        return error_response(error)
    except ConnectionResetError:
        # The client left while its body was arriving: no one to answer and nothing of ours failed. (The store
        # translates its own connection errors; this one can only be the client's.)
        return web.Response(status=CLIENT_CLOSED)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_from_http_exception(request, exc))
        if "Allow" in exc.headers:  # a 405 must say which methods the route has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        # The route's template, not the path: a webhook's path holds its token, which no log line may show.
        log.exception("unhandled error on %s %s", request.method, route_template(request))
        return error_response(errors.InternalError())
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Basic auth on every /v4/ path, before routing, so unknown paths reveal nothing to strangers."""
    if not request.path.startswith("/v4/"):
        return await handler(request)
    parsed = credentials.parse_basic(request.headers.get("Authorization"))
    if parsed is None:
        raise errors.AuthenticationFailed()
    app_key, master_secret = parsed
    if not credentials.could_be_app_key(app_key):
        # Refused before any query or cache entry: random keys cost the database nothing.
        credentials.secret_matches(master_secret, None)  # the same work as any other refusal
        raise errors.AuthenticationFailed()
    cache = request.app[keys.CREDENTIALS]
    cached, found = cache.get(app_key)
    if not cached:
        found = await request.app[keys.SCHEDULES].get_app_with_secret_digest(app_key)
        cache.put(app_key, found)
    stored_digest = found[1] if found else None
    if not credentials.secret_matches(master_secret, stored_digest) or found is None:
        raise errors.AuthenticationFailed()
    request[keys.CURRENT_APP] = found[0]
    return await handler(request)
