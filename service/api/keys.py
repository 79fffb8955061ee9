"""Typed application keys: the one place that says what the aiohttp app carries."""

from __future__ import annotations

import asyncio
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
    """Where the process is, for /readyz: starting until every resource is up, draining once shutdown began;
    and how many requests are in flight, so a shutdown can wait for them before closing any connection."""

    state: Literal["starting", "ready", "draining"] = "starting"
    requests_in_flight: int = 0
    _idle: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def request_started(self) -> None:
        self.requests_in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.requests_in_flight -= 1
        if self.requests_in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True once no request is in flight, False if some still are after `timeout` seconds."""
        if self.requests_in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
# How long /readyz and /metrics wait for the database before answering without it.
PROBE_TIMEOUT = web.AppKey("probe_timeout", float)
# Request-scoped: the authenticated app, set by the auth middleware.
CURRENT_APP = web.RequestKey("current_app", types.App)


def current_app(request: web.Request) -> types.App:
    return request[CURRENT_APP]
