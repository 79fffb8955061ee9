"""Operations endpoints: `/healthz`, `/readyz`, `/metrics`.

They sit outside `/v4/`, so they need no app credentials, and they answer nothing about any app: process
state, counts and timings only. The database is asked with a short timeout (PROBE_TIMEOUT), so a probe
or a scrape answers even while it is down.
"""

from __future__ import annotations

from aiohttp import web

from service import metrics
from service.api import keys
from service.domain import errors

routes = web.RouteTableDef()


def _status(status: str, http_status: int = 200) -> web.Response:
    return web.json_response({"status": status}, status=http_status)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Never touches the database, so a database outage restarts nothing."""
    return _status("alive")


def own_problem(app: web.Application) -> str | None:
    """Why this process cannot take traffic now, the database aside ("starting", "draining", a loop down)."""
    state = app[keys.LIFECYCLE].state
    if state != "ready":
        return state
    for check in app[keys.HEALTH_CHECKS]:
        problem = check()
        if problem is not None:
            return str(problem)
    return None


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready for traffic: started, not draining, the database answers and its migrations are current; with
    workers, every other worker says it is ready too (service.workerboard)."""
    problem = own_problem(request.app)
    if problem is not None:
        return _status(problem, 503)
    seat = request.app.get(keys.WORKER_SEAT)
    if seat is not None:
        problem = seat.board.first_not_ready(besides=seat.index)
        if problem is not None:
            return _status(problem, 503)
    try:
        current = await request.app[keys.PROBES].schema_is_current(request.app[keys.PROBE_TIMEOUT])
    except errors.DatabaseUnavailable:
        return _status("database unavailable", 503)
    return _status("ready") if current else _status("migrations pending", 503)


@routes.get("/metrics")
async def metrics_text(request: web.Request) -> web.Response:
    """Prometheus text. The backlog is counted now; when the database does not answer it is left out."""
    probes = request.app.get(keys.PROBES)
    backlog = pool = None
    if probes is not None:
        pool = probes.pool_usage()
        try:
            backlog = await probes.due_backlog(request.app[keys.PROBE_TIMEOUT])
        except errors.DatabaseUnavailable:
            backlog = None
    return web.Response(body=metrics.exposition(backlog, pool), headers={"Content-Type": metrics.CONTENT_TYPE})
