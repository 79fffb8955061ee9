"""Typed application keys: the one place that says what the aiohttp app carries."""

from __future__ import annotations

import dataclasses
from typing import Literal

from aiohttp import web

from service.domain import types
from service.store import database

STORE = web.AppKey("store", database.Store)
WAVE_OFFSETS = web.AppKey("wave_offsets", tuple)
IN_FLIGHT_WAIT = web.AppKey("in_flight_wait", float)


@dataclasses.dataclass
class Lifecycle:
    """Where the process is, for /readyz: starting until every resource is up, draining once shutdown began."""

    state: Literal["starting", "ready", "draining"] = "starting"


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
# How long /readyz and /metrics wait for the database before answering without it.
PROBE_TIMEOUT = web.AppKey("probe_timeout", float)
# Request-scoped: the authenticated app, set by the auth middleware.
CURRENT_APP = web.RequestKey("current_app", types.App)


def current_app(request: web.Request) -> types.App:
    return request[CURRENT_APP]
