"""The one place that wires settings, database, store and routes into an aiohttp application.

Start-up and shutdown order is the order of `cleanup_ctx`: the database comes up first and goes down last.
/readyz says "starting" until both are up and "draining" from the first moment of shutdown on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from service import admin, console, metrics, workerboard
from service.api import handlers, keys, middleware, ops, triggers
from service.domain import credentials, dispatch
from service.engine import backends, dispatcher
from service.settings import Settings
from service.store import embedded, migrations, notices
from service.store.schedules import ScheduleStore
from service.store.stores import PROBE_POOL_SIZE, Stores

log = logging.getLogger(__name__)

# The process's stores; the handlers see only the one each needs (service.api.keys).
STORES = web.AppKey("stores", Stores)
ENGINE = web.AppKey("engine", dispatcher.Engine)
APP_CHANGES = web.AppKey("app_changes", notices.AppChanges)


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
            require_credentials=settings.push_require_credentials,
        )
    return backends.LocalBackend()


def engine_config(settings: Settings) -> dispatcher.EngineConfig:
    return dispatcher.EngineConfig(
        wave_offsets=settings.wave_offset_minutes,
        misfire_grace=dt.timedelta(seconds=settings.misfire_grace),
        batch_size=settings.engine_batch_size,
        send_concurrency=settings.send_concurrency,
        # A planned batch may wait for send slots before its sends time out: the lease covers both.
        lease=dt.timedelta(seconds=max(settings.lease_seconds, settings.send_timeout_seconds * 3)),
        retry=dispatch.RetryPolicy(
            base_seconds=settings.retry_base_seconds,
            max_seconds=settings.retry_max_seconds,
            max_attempts=settings.max_attempts,
        ),
        drain_seconds=settings.shutdown_timeout_seconds,
        max_idle_seconds=settings.engine_max_idle_seconds,
        plan_ahead=dt.timedelta(seconds=settings.engine_plan_ahead_seconds),
        max_planned_ahead=settings.engine_max_planned_ahead,
        planners=settings.engine_planners,
        retention=dt.timedelta(days=settings.retention_days) if settings.retention_days else None,
        retention_batch_size=settings.retention_batch_size,
    )


def engine_pool_size(settings: Settings) -> int:
    """The engine's own connections: its plan transactions at once, the fire loop's claims, the claimer, the
    recorder and the retention sweep (the expiry sweep runs between plan transactions, on theirs). API traffic
    cannot take them (service.store.database)."""
    return settings.engine_planners + 4


def connections_per_process(settings: Settings) -> int:
    """The most database connections one serving process holds: the API's pool, the engine's pool and its
    LISTEN connection, the probes' pool, and the LISTEN connection for app changes. (Migrating at start-up
    takes one more for a moment.)"""
    engine = engine_pool_size(settings) + 1 if settings.engine_enabled else 0
    return settings.db_pool_size + engine + PROBE_POOL_SIZE + 1


class PushCredentialsKeyError(ValueError):
    """PUSH_CREDENTIALS_KEY is missing or cannot decrypt the push secrets already stored."""


async def check_push_credentials_key(store: ScheduleStore, settings: Settings) -> None:
    """Refuse to start when the push secrets stored cannot be decrypted with PUSH_CREDENTIALS_KEY: every send
    of those apps would fail. In a rolling deploy that forgot the key, the new replicas stop at once and
    say why, while the old ones keep sending."""
    if not settings.engine_enabled or not settings.push_api_url:
        return
    stored = await store.push_secrets_sample()
    if not stored:
        return
    key = settings.push_credentials_key
    if not key:
        raise PushCredentialsKeyError(
            f"PUSH_CREDENTIALS_KEY is not set, but {len(stored)}+ apps have push credentials stored encrypted "
            f"with it (app {stored[0][0]}); set the key they were stored with"
        )
    for app_key, encrypted in stored:
        try:
            credentials.decrypt_push_secret(encrypted, key)
        except ValueError as exc:
            raise PushCredentialsKeyError(
                f"PUSH_CREDENTIALS_KEY cannot decrypt the push secret of app {app_key} ({exc}); is it the key "
                "the apps' push credentials were stored with?"
            ) from None


async def create_demo_app(store: ScheduleStore, settings: Settings) -> None:
    """On the first start of an empty embedded database, a demo app, so a new user can call the API at once
    (the quick start). Its secret goes only to a 0600 file; the log line names the file, never the secret."""
    demo = await admin.ensure_demo_app(store, settings.data_dir, settings.default_max_schedules)
    if demo is not None:
        saved_in = settings.data_dir / admin.DEMO_CREDENTIALS_FILE
        log.warning(
            "created a demo app %s; its credentials are in %s (mode 0600)",
            demo.app.app_key,
            saved_in,
            extra={"event": "demo_app_created", "app_key": demo.app.app_key, "credentials_file": str(saved_in)},
        )


def engine_wake_horizon(settings: Settings) -> dt.timedelta:
    """How far ahead a change must NOTIFY the engines: every engine reads the database again at least every
    ENGINE_MAX_IDLE_SECONDS and plans ENGINE_PLAN_AHEAD_SECONDS ahead. It assumes every replica runs with the
    same two settings (one more second of margin)."""
    return dt.timedelta(seconds=settings.engine_max_idle_seconds + settings.engine_plan_ahead_seconds + 1.0)


async def drain(app: web.Application, timeout: float) -> bool:
    """The first step of a graceful stop, once the listener is closed: /readyz answers "draining", responses
    close their connections, and the requests in flight finish (True) or `timeout` runs out (False).

    Their connections stay open meanwhile, so a request whose body is still arriving completes; aiohttp's own
    shutdown, which follows, stops reading from every connection at once.
    """
    lifecycle = app[keys.LIFECYCLE]
    lifecycle.state = "draining"
    return await lifecycle.wait_idle(timeout)


# With workers: how often a worker posts a change of its readiness and publishes its pool's use.
WORKER_POST_SECONDS = 0.5


async def _post_worker_state(app: web.Application, seat: workerboard.Seat, stop: asyncio.Event) -> None:
    """Keep this worker's entry on the board and its pool gauges current, until `stop`."""
    posted = None
    while not stop.is_set():
        status = ops.own_problem(app) or workerboard.READY
        if status != posted and await asyncio.to_thread(seat.board.post, seat.index, os.getpid(), status):
            posted = status
        probes = app.get(keys.PROBES)
        if probes is not None:
            metrics.record_pool(probes.pool_usage())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WORKER_POST_SECONDS)


def create_app(settings: Settings, worker: workerboard.Seat | None = None) -> web.Application:
    """The application; `worker` when it is one of `serve --workers N`'s processes."""
    app = web.Application(
        client_max_size=middleware.MAX_BODY_BYTES,
        middlewares=[middleware.observe_middleware, middleware.errors_middleware, middleware.auth_middleware],
    )
    app[keys.WAVE_OFFSETS] = settings.wave_offset_minutes
    app[keys.CREDENTIALS] = keys.CredentialCache()
    app[keys.LIFECYCLE] = keys.Lifecycle()
    app[keys.HEALTH_CHECKS] = []
    # A probe or a scrape must answer well within a load balancer's or Prometheus's own timeout.
    app[keys.PROBE_TIMEOUT] = min(settings.db_timeout_seconds, 2.0)
    # DELETE and disable wait at most this long for a send already in flight, then return.
    app[keys.IN_FLIGHT_WAIT] = settings.send_timeout_seconds
    app[keys.TRIGGERING] = keys.Triggering(
        settings.run_poll_seconds, settings.hook_rate_per_minute, settings.public_base_url
    )

    async def database_context(app: web.Application) -> AsyncIterator[None]:
        dsn, server = await open_database(settings)
        try:
            await migrations.migrate(dsn)
            stores = await Stores.open(
                dsn,
                api_pool_size=settings.db_pool_size,
                engine_pool_size=engine_pool_size(settings) if settings.engine_enabled else 0,
                timeout=settings.db_timeout_seconds,
                wake_horizon=engine_wake_horizon(settings),
            )
            app[STORES] = stores
            app[keys.SCHEDULES] = stores.schedules
            app[keys.PROBES] = stores.probes
            cache = app[keys.CREDENTIALS]
            app_changes = notices.AppChanges(dsn, cache.forget, cache.clear)
            app[APP_CHANGES] = app_changes
            stop_listening = asyncio.Event()
            listening = asyncio.create_task(app_changes.run(stop_listening), name="app-changes")
            try:
                await check_push_credentials_key(stores.schedules, settings)
                if server is not None:  # the embedded database only: never on a server named by DATABASE_URL
                    await create_demo_app(stores.schedules, settings)
                yield
            finally:
                stop_listening.set()
                await listening
                await stores.close()
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)

    async def engine_context(app: web.Application) -> AsyncIterator[None]:
        runs = app[STORES].runs
        if runs is None:
            yield
            return
        engine = dispatcher.Engine(runs, make_backend(settings), engine_config(settings))
        await engine.start()
        app[ENGINE] = engine
        app[keys.HEALTH_CHECKS].append(engine.problem)
        yield
        await engine.stop()

    async def worker_context(app: web.Application) -> AsyncIterator[None]:
        assert worker is not None
        stop = asyncio.Event()
        posting = asyncio.create_task(_post_worker_state(app, worker, stop), name="worker-board")
        try:
            yield
        finally:
            stop.set()
            await posting

    async def mark_ready(app: web.Application) -> None:
        app[keys.LIFECYCLE].state = "ready"

    async def mark_draining(app: web.Application) -> None:
        # aiohttp's shutdown signal: the listener is closed and in-flight requests still run.
        app[keys.LIFECYCLE].state = "draining"
        if worker is not None:
            worker.board.post(worker.index, os.getpid(), "draining")

    # Order matters: the engine starts after the database and stops before it. cleanup_ctx runs first among
    # the startup handlers, so mark_ready runs once both are up.
    app.cleanup_ctx.append(database_context)
    app.cleanup_ctx.append(engine_context)
    if worker is not None:
        app[keys.WORKER_SEAT] = worker
        app.cleanup_ctx.append(worker_context)
    app.on_startup.append(mark_ready)
    app.on_shutdown.append(mark_draining)
    app.add_routes(handlers.routes)
    app.add_routes(triggers.routes)
    app.add_routes(ops.routes)
    app.add_routes(console.routes)
    app.on_response_prepare.append(console.add_security_headers)
    return app
