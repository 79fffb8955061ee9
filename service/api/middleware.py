"""Authentication and the one error envelope, for every path: handlers only raise domain errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.api import keys
from service.domain import credentials, errors

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 64 * 1024


def error_response(error: errors.ServiceError) -> web.Response:
    response = web.json_response(
        {"error": {"code": error.code, "message": error.message}}, status=error.http_status
    )
    if isinstance(error, errors.AuthenticationFailed):
        response.headers["WWW-Authenticate"] = 'Basic realm="schedules"'
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
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(request, exc))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
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
    found = await request.app[keys.STORE].get_app_with_secret_digest(app_key)
    stored_digest = found[1] if found else None
    if not credentials.secret_matches(master_secret, stored_digest) or found is None:
        raise errors.AuthenticationFailed()
    request[keys.CURRENT_APP] = found[0]
    return await handler(request)
