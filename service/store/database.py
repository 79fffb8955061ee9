"""The database: its connection pools, the translation of driver errors, and the three stores built on them.

The store is split by who uses it, each the only caller of asyncpg for its part:
- `schedules.ScheduleStore`: apps and schedules, for the API and the CLI;
- `runqueue.RunQueue`: planning, claiming and recording runs, for the engine;
- `probes.Probes`: readiness and the metrics' counts, for operations.

Each user gets a pool of its own, so no user can starve another: a flood of API requests (or ten DELETEs
waiting for sends in flight) cannot take the connections the engine plans and claims with, and a scrape or a
probe answers while the API's pool is exhausted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import asyncpg

from service.domain import errors, wirejson
from service.store.queries import SQL

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

NOTIFY_CHANNEL = "schedule_changes"
# sql/0006 notify_app_changed: an app's credentials, zone or state changed; the payload is its key.
APP_CHANGES_CHANNEL = "app_changes"

# Failures that mean "the database cannot do this right now": the caller may retry (28203). Disk full and other
# resource exhaustion (class 53) belong here: the write was not acknowledged, nothing is lost. So do a replica
# that turned read-only after a failover, credentials rotated under a running process, and a transaction
# rolled back by a deadlock or a serialization failure (class 40): all pass, and a retry is the remedy.
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.LockNotAvailableError,
)


def translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Driver errors stop at this edge: unavailability becomes DatabaseUnavailable, domain errors pass."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except errors.ServiceError:
            raise
        except UNAVAILABLE as exc:
            log.warning("database unavailable in %s: %r", method.__name__, exc)
            raise errors.DatabaseUnavailable() from exc

    return wrapper


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release without asyncpg's RESET ALL / UNLISTEN round trip: pool connections never change session
    state (LISTEN and advisory locks use dedicated connections); asyncpg still rolls back an open transaction."""


async def register_json_codecs(connection: asyncpg.Connection) -> None:
    """json and jsonb as Python values, through orjson with exact integers (service.domain.wirejson)."""
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=wirejson.dumps_text, decoder=wirejson.loads, schema="pg_catalog"
        )


class Pool:
    """One asyncpg pool and the timeout of taking a connection from it."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout

    @classmethod
    async def open(cls, dsn: str, *, min_size: int, max_size: int, timeout: float) -> Pool:
        """`timeout` bounds connecting, acquiring and every statement."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min(min_size, max_size),
                max_size=max_size,
                timeout=timeout,
                command_timeout=timeout,
                init=register_json_codecs,
                reset=_keep_session,
            )
        except UNAVAILABLE as exc:
            raise errors.DatabaseUnavailable() from exc
        assert pool is not None
        return cls(pool, timeout)

    def acquire(self, timeout: float | None = None) -> Any:
        return self.pool.acquire(timeout=self.acquire_timeout if timeout is None else timeout)

    async def close(self) -> None:
        """Close gracefully within the acquire timeout, else cut what is left: a connection gone half-open
        (its peer vanished without a word) would make a graceful close wait forever, and a stop with it."""
        try:
            await asyncio.wait_for(self.pool.close(), self.acquire_timeout)
        except TimeoutError:
            log.warning("database pool did not close within %.1f s; terminating its connections", self.acquire_timeout)
            self.pool.terminate()


async def connect_listener(
    dsn: str,
    timeout: float,
    callback: Callable[[str], None],
    channel: str = NOTIFY_CHANNEL,
    application_name: str | None = None,
) -> asyncpg.Connection:
    """A dedicated connection LISTENing on `channel` (schedule changes by default); `callback(payload)` on
    each notification. `application_name` shows in pg_stat_activity."""
    server_settings = {"application_name": application_name} if application_name else None
    connection = await asyncpg.connect(dsn=dsn, timeout=timeout, server_settings=server_settings)
    await connection.add_listener(channel, lambda _connection, _pid, _channel, payload: callback(payload))
    return connection


async def connection_room(dsn: str, timeout: float) -> int:
    """How many connections the server at `dsn` still takes (queries.sql connection_room): this check's own
    connection is counted as free, since it closes before the count is used."""
    connection = await asyncpg.connect(dsn=dsn, timeout=timeout)
    try:
        room: int = await connection.fetchval(SQL["connection_room"], timeout=timeout)
    finally:
        await connection.close()
    return room
