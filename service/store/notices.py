"""Hearing about app changes: a LISTEN connection every process keeps open for its credential cache.

`apps disable`, `rotate-secret`, `delete` and `update` NOTIFY `app_changes` with the app's key (sql/0006), and
each process forgets that app at once. Notifications sent while no connection listens are lost, so every
(re)connection first tells the caller to forget everything. A heartbeat finds a half-open socket (a database
that vanished without closing it) within one beat; the cache's own short lifetime covers the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from service.store.database import APP_CHANGES_CHANNEL, connect_listener

log = logging.getLogger(__name__)

# How the connection shows in pg_stat_activity.
APP_CHANGES_APPLICATION_NAME = "push-schedule-service: app changes"


class AppChanges:
    def __init__(
        self,
        dsn: str,
        on_change: Callable[[str], None],
        on_connected: Callable[[], None],
        *,
        heartbeat_seconds: float = 5.0,
        timeout: float = 5.0,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._on_change = on_change
        self._on_connected = on_connected
        self._heartbeat = heartbeat_seconds
        self._timeout = timeout
        self._retry = retry_seconds
        self._max_retry = max_retry_seconds
        self.connections_made = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Listen until `stopping` is set, making the connection again whenever it fails."""
        retry = self._retry
        while not stopping.is_set():
            connection = None
            try:
                connection = await connect_listener(
                    self._dsn, self._timeout, self._on_change, APP_CHANGES_CHANNEL, APP_CHANGES_APPLICATION_NAME
                )
                self.connections_made += 1
                retry = self._retry
                self._on_connected()
                while not stopping.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stopping.wait(), timeout=self._heartbeat)
                    if not stopping.is_set():
                        await connection.fetchval("SELECT 1", timeout=self._timeout)
            except Exception as exc:  # noqa: BLE001 - any failure: the connection is gone, make a new one
                log.warning(
                    "app changes: LISTEN connection lost (%r), trying again in %.0f s; the credential cache's "
                    "lifetime bounds staleness until it is back", exc, retry,
                    extra={"event": "app_changes_listener_lost"},
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=retry)
                retry = min(retry * 2, self._max_retry)  # one line a try, fewer as an outage lasts
            finally:
                if connection is not None:
                    connection.terminate()
