"""Hearing about app changes: a LISTEN connection every process keeps open for its credential cache.

`apps disable`, `rotate-secret`, `delete` and `update` NOTIFY `app_changes` with the app's key (sql/0006), and
each process forgets that app at once. The connection is kept by service.store.listening; every (re)connection
first tells the caller to forget everything, since notifications sent meanwhile are lost. The cache's own short
lifetime covers the gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from service.store.database import APP_CHANGES_CHANNEL, connect_listener
from service.store.listening import keep_listening

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
        await keep_listening(
            lambda: connect_listener(
                self._dsn, self._timeout, self._on_change, APP_CHANGES_CHANNEL, APP_CHANGES_APPLICATION_NAME
            ),
            lambda connection: connection.fetchval("SELECT 1", timeout=self._timeout),
            _terminate,
            stopping,
            heartbeat_seconds=self._heartbeat,
            on_connected=self._connected,
            on_lost=_log_lost,
            retry_seconds=self._retry,
            max_retry_seconds=self._max_retry,  # one line a try, fewer as an outage lasts
        )

    def _connected(self) -> None:
        self.connections_made += 1
        self._on_connected()


async def _terminate(connection: asyncpg.Connection) -> None:
    connection.terminate()  # a listener holds nothing to finish; a half-open socket would stall a close


def _log_lost(exc: Exception, pause: float) -> None:
    log.warning(
        "app changes: LISTEN connection lost (%r), trying again in %.0f s; the credential cache's lifetime bounds "
        "staleness until it is back", exc, pause, extra={"event": "app_changes_listener_lost"},
    )
