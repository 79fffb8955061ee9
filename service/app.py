"""The one place that wires settings, database, store and routes into an aiohttp application.

Start-up and shutdown order is the order of `cleanup_ctx`: the database comes up first and goes down last.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service import admin
from service.api import handlers, keys, middleware
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


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=middleware.MAX_BODY_BYTES,
        middlewares=[middleware.errors_middleware, middleware.auth_middleware],
    )
    app[keys.WAVE_OFFSETS] = settings.wave_offset_minutes

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

    app.cleanup_ctx.append(database_context)
    app.add_routes(handlers.routes)
    return app
