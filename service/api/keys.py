"""Typed application keys: the one place that says what the aiohttp app carries."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Literal

from aiohttp import web

from service import workerboard
from service.domain import types
from service.store import probes, schedules


class CredentialCache:
    """Apps and their secret digests by app key, for a few seconds, so authenticating does not cost a query
    on every request. Unknown keys are remembered too, so a wrong key and a wrong secret still take the same
    path and the same time.

    A disable, rotate, delete or update of an app reaches every process at once through NOTIFY
    (service.store.notices), which calls `forget`; `clear` when notifications may have been missed. The
    lifetime is only the fallback while that connection is down; a new app is seen once an unknown key is
    re-asked, after the lifetime."""

    def __init__(self, ttl_seconds: float = 10.0, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, tuple[types.App, bytes] | None]] = {}

    def get(self, app_key: str) -> tuple[bool, tuple[types.App, bytes] | None]:
        """(cached, app and digest or None for a key known not to exist)."""
        entry = self._entries.get(app_key)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, app_key: str, found: tuple[types.App, bytes] | None) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # simplest bound: a burst of new keys costs one refill
        self._entries[app_key] = (time.monotonic() + self._ttl, found)

    def forget(self, app_key: str) -> None:
        self._entries.pop(app_key, None)

    def clear(self) -> None:
        self._entries.clear()


@dataclasses.dataclass(frozen=True)
class Triggering:
    """Run now, webhooks and the polling pattern (issue 13): how long a poller waits, the webhook rate, and the
    public URL that Location headers and webhook URLs are built on (never the request's Host header)."""

    poll_seconds: int = 2
    hook_rate_per_minute: int = 60  # 0: no limit
    public_base_url: str | None = None

    def url(self, path: str) -> str:
        """`path` under PUBLIC_BASE_URL when it is set, else as it is (relative)."""
        return path if self.public_base_url is None else self.public_base_url + path


SCHEDULES = web.AppKey("schedules", schedules.ScheduleStore)
TRIGGERING = web.AppKey("triggering", Triggering)
PROBES = web.AppKey("probes", probes.Probes)
# What /readyz asks beyond the database: each returns why the process cannot do its work now, or None (the
# engine reports a crashed loop here).
HEALTH_CHECKS = web.AppKey("health_checks", list)
CREDENTIALS = web.AppKey("credentials", CredentialCache)
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
        except TimeoutError:
            return False
        return True


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
# How long /readyz and /metrics wait for the database before answering without it.
PROBE_TIMEOUT = web.AppKey("probe_timeout", float)
# With `serve --workers N`: this worker's number and the board where every worker posts its readiness.
WORKER_SEAT = web.AppKey("worker_seat", workerboard.Seat)
# Request-scoped: the authenticated app, set by the auth middleware.
CURRENT_APP = web.RequestKey("current_app", types.App)


def current_app(request: web.Request) -> types.App:
    return request[CURRENT_APP]
