"""Probes: what /readyz and /metrics ask the database, on a small pool of their own and with short timeouts,
so they answer whatever the API's traffic does, and cost the database little whatever the scrape rate."""

from __future__ import annotations

import asyncio

from service.domain import types
from service.store import migrations
from service.store.database import Pool, translated
from service.store.queries import SQL

# Each backlog count stops here: the gauge then reads "at least this many", and a scrape during a million-row
# backlog costs no more than an idle one.
BACKLOG_COUNT_LIMIT = 100_000


class Probes:
    def __init__(self, pool: Pool, api_pool: Pool) -> None:
        self._pool = pool
        self._api_pool = api_pool

    @translated
    async def schema_is_current(self, timeout: float) -> bool:
        """For /readyz: the database answers within `timeout` seconds and every migration file is applied."""
        async with self._pool.acquire(timeout) as connection:
            return await asyncio.wait_for(migrations.is_current(connection), timeout)

    @translated
    async def due_backlog(self, timeout: float) -> types.DueBacklog:
        """For /metrics: work due now and not done, each count bounded in rows and in time."""
        async with self._pool.acquire(timeout) as connection:
            row = await connection.fetchrow(SQL["count_due_backlog"], BACKLOG_COUNT_LIMIT, timeout=timeout)
        return types.DueBacklog(row["fires"], row["retries"], row["expired_leases"])

    def pool_usage(self) -> types.PoolUsage:
        """The API's pool (DB_POOL_SIZE): the one client traffic can exhaust; the engine's is its own."""
        pool = self._api_pool.pool
        return types.PoolUsage(pool.get_size(), pool.get_idle_size(), pool.get_max_size())
