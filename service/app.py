"""The one place that wires settings, database, store and routes into an aiohttp application.

Start-up and shutdown order is the order of `cleanup_ctx`: the database comes up first and goes down last.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service import admin
from service.api import handlers, keys, middleware
from service.domain import dispatch
from service.engine import backends, dispatcher
from service.settings import Settings
from service.store import database, embedded, migrations

log = logging.getLogger(__name__)


async def open_database(settings: Settings) -> tuple[str, embedded.EmbeddedPostgres | None]:
    """DATABASE_URL when set, else the embedded server under DATA_DIR (started if it is not running)."""
    if settings.database_url:
        return settings.database_url, None
    server = embedded.EmbeddedPostgres(settings.data_dir)
    dsn = await asyncio.to_thread(server.start)
    return dsn, server


def make_backend(settings: Settings) -> backends.PushBackend:
    if settings.push_api_url:
        return backends.HttpBackend(
            settings.push_api_url,
            timeout_seconds=settings.send_timeout_seconds,
            concurrency=settings.send_concurrency,
            credentials_key=settings.push_credentials_key,
        )
    return backends.LocalBackend()


def engine_config(settings: Settings) -> dispatcher.EngineConfig:
    return dispatcher.EngineConfig(
        wave_offsets=settings.wave_offset_minutes,
        misfire_grace=dt.timedelta(seconds=settings.misfire_grace),
        batch_size=settings.engine_batch_size,
        send_concurrency=settings.send_concurrency,
        lease=dt.timedelta(seconds=max(settings.lease_seconds, settings.send_timeout_seconds * 2)),
        retry=dispatch.RetryPolicy(
            base_seconds=settings.retry_base_seconds,
            max_seconds=settings.retry_max_seconds,
            max_attempts=settings.max_attempts,
        ),
        drain_seconds=settings.shutdown_timeout_seconds,
        max_idle_seconds=settings.engine_max_idle_seconds,
    )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=middleware.MAX_BODY_BYTES,
        middlewares=[middleware.errors_middleware, middleware.auth_middleware],
    )
    app[keys.WAVE_OFFSETS] = settings.wave_offset_minutes
    # DELETE and disable wait at most this long for a send already in flight, then return.
    app[keys.IN_FLIGHT_WAIT] = settings.send_timeout_seconds

    async def database_context(app: web.Application) -> AsyncIterator[None]:
        dsn, server = await open_database(settings)
        try:
            await migrations.migrate(dsn)
            store = await database.Store.connect(
                dsn, max_size=settings.db_pool_size, timeout=settings.db_timeout_seconds
            )
            app[keys.STORE] = store
            demo = await admin.ensure_demo_app(store, settings.data_dir, settings.default_max_schedules)
            if demo is not None:
                print(
                    "Created a demo app (saved in "
                    f"{settings.data_dir / admin.DEMO_CREDENTIALS_FILE}):\n{json.dumps(demo.to_json())}",
                    flush=True,
                )
            yield
            await store.close()
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)

    async def engine_context(app: web.Application) -> AsyncIterator[None]:
        if not settings.engine_enabled:
            yield
            return
        engine = dispatcher.Engine(app[keys.STORE], make_backend(settings), engine_config(settings))
        await engine.start()
        yield
        await engine.stop()

    # Order matters: the engine starts after the database and stops before it.
    app.cleanup_ctx.append(database_context)
    app.cleanup_ctx.append(engine_context)
    app.add_routes(handlers.routes)
    return app
