"""Opening the database for one process: a pool per user (API, engine, probes) and the store each uses."""

from __future__ import annotations

import dataclasses
import datetime as dt

from service.store.database import Pool
from service.store.probes import Probes
from service.store.runqueue import RunQueue
from service.store.schedules import ScheduleStore

# The probes' pool: /readyz and /metrics, one query each at a time.
PROBE_POOL_SIZE = 2


@dataclasses.dataclass
class Stores:
    schedules: ScheduleStore
    runs: RunQueue | None  # None when this process runs no engine
    probes: Probes
    _pools: list[Pool]

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        api_pool_size: int,
        engine_pool_size: int = 0,
        timeout: float = 5.0,
        wake_horizon: dt.timedelta | None = None,
    ) -> Stores:
        """`timeout` bounds connecting, acquiring and every statement. No engine pool when its size is 0."""
        pools: list[Pool] = []
        try:
            api = await Pool.open(dsn, min_size=1, max_size=api_pool_size, timeout=timeout)
            pools.append(api)
            probe = await Pool.open(dsn, min_size=0, max_size=PROBE_POOL_SIZE, timeout=timeout)
            pools.append(probe)
            engine = None
            if engine_pool_size:
                engine = await Pool.open(dsn, min_size=1, max_size=engine_pool_size, timeout=timeout)
                pools.append(engine)
        except BaseException:
            for pool in pools:
                await pool.close()
            raise
        return cls(
            schedules=ScheduleStore(api, wake_horizon=wake_horizon),
            runs=None if engine is None else RunQueue(engine, dsn),
            probes=Probes(probe, api),
            _pools=pools,
        )

    async def close(self) -> None:
        for pool in self._pools:
            await pool.close()
