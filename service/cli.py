"""Command line: `serve` (default), `migrate`, `apps create|list|disable|enable|delete|rotate-secret|update`,
`healthcheck`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import logging
import os
import pathlib
import signal
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from service import admin, logs, workerboard, workers
from service import settings as settings_module
from service.api.server import ServiceRunner
from service.app import create_app, drain, open_database
from service.domain import types
from service.settings import Settings
from service.store import migrations
from service.store.stores import Stores

T = TypeVar("T")

log = logging.getLogger(__name__)


def _workers_argument(text: str) -> str:
    """`--workers`: checked here (a number or `auto`), kept as given for Settings."""
    try:
        settings_module.parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command")
    serve_command = commands.add_parser("serve", help="serve the API (the default)", allow_abbrev=False)
    serve_command.add_argument(
        "--workers",
        type=_workers_argument,
        default=None,
        metavar="N",
        help="serving processes sharing the port, or 'auto' for the cores given (default: WORKERS, 1)",
    )
    # Internal: how `serve --workers N` starts each of its workers (service.workers).
    serve_command.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    serve_command.add_argument("--worker-board", type=pathlib.Path, default=None, help=argparse.SUPPRESS)
    serve_command.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    commands.add_parser("migrate", help="apply pending migrations and exit")
    apps = commands.add_parser("apps", help="manage apps").add_subparsers(dest="apps_command", required=True)
    # No abbreviations: `--push-secret S` must be refused, not taken as `--push-secret-file S`.
    create = apps.add_parser(
        "create", help="register an app and print its credentials once, as JSON", allow_abbrev=False
    )
    create.add_argument("--name", required=True)
    create.add_argument("--time-zone", default="UTC", help="IANA zone of the app's zone_type 1 times")
    create.add_argument("--max-schedules", type=int, default=None, help="cap of valid tasks")
    create.add_argument("--push-key", help="app key this app pushes with (http backend)")
    # The push secret never comes from argv, which `ps` and shell history show: from a file, or standard input.
    create.add_argument(
        "--push-secret-file",
        metavar="PATH",
        help="file holding the push key's secret ('-': standard input); stored encrypted with PUSH_CREDENTIALS_KEY",
    )
    apps.add_parser("list", help="list apps as JSON lines (never their secrets)")
    for name, summary in (
        ("disable", "stop the app: its tasks do not fire and its credentials open nothing, on every replica at once"),
        ("enable", "start a disabled app again"),
        ("delete", "delete the app and its tasks for good; the retention sweep purges them later"),
        ("rotate-secret", "give the app a new master secret, printed once; the old one stops working at once"),
    ):
        apps.add_parser(name, help=summary, allow_abbrev=False).add_argument("app_key", metavar="KEY")
    update = apps.add_parser(
        "update", help="change an app's time zone, cap or push credentials (stored tasks keep their zone)",
        allow_abbrev=False,
    )
    update.add_argument("app_key", metavar="KEY")
    update.add_argument("--time-zone", help="IANA zone for tasks created from now on")
    update.add_argument("--max-schedules", type=int, help="cap of valid tasks (a lower cap deletes nothing)")
    update.add_argument("--push-key", help="app key this app pushes with (http backend)")
    update.add_argument("--push-secret-file", metavar="PATH", help="as for `apps create`")
    commands.add_parser(
        "healthcheck", help="exit 0 when the service on HOST:PORT answers /healthz (the container's HEALTHCHECK)"
    )
    return parser


async def _with_database(settings: Settings, work: Callable[[str], Awaitable[T]]) -> T:
    """Run `work(dsn)` on a migrated database; an embedded server started for it is stopped afterwards."""
    dsn, server = await open_database(settings)
    try:
        await migrations.migrate(dsn)
        return await work(dsn)
    finally:
        if server is not None and server.started_here:
            await asyncio.to_thread(server.stop)


def _read_push_secret(path: str | None) -> str | None:
    """The push secret from a file, or standard input for '-', without its trailing newline."""
    if path is None:
        return None
    text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text(encoding="utf-8")
    secret = text.rstrip("\r\n")
    if not secret:
        raise ValueError(f"--push-secret-file {path}: is empty")
    return secret


async def _apps_create(settings: Settings, args: argparse.Namespace) -> None:
    async def work(dsn: str) -> None:
        stores = await Stores.open(dsn, api_pool_size=1)
        try:
            cap = args.max_schedules if args.max_schedules is not None else settings.default_max_schedules
            created = await admin.register_app(
                stores.schedules,
                args.name,
                args.time_zone,
                cap,
                push_key=args.push_key,
                push_secret=_read_push_secret(args.push_secret_file),
                credentials_key=settings.push_credentials_key,
            )
        finally:
            await stores.close()
        print(json.dumps(created.to_json()))

    await _with_database(settings, work)


async def _apps_list(settings: Settings) -> None:
    async def work(dsn: str) -> None:
        stores = await Stores.open(dsn, api_pool_size=1)
        try:
            for record in await stores.schedules.list_apps():
                print(json.dumps(record.to_json()))
        finally:
            await stores.close()

    await _with_database(settings, work)


_STATE_OF_COMMAND: dict[str, types.AppState] = {"disable": "disabled", "enable": "active", "delete": "deleted"}


async def _apps_change(settings: Settings, args: argparse.Namespace) -> None:
    """disable, enable, delete, rotate-secret and update: one app, its result printed as one JSON object."""

    async def work(dsn: str) -> dict[str, object]:
        stores = await Stores.open(dsn, api_pool_size=1)
        try:
            store = stores.schedules
            if args.apps_command in _STATE_OF_COMMAND:
                now = dt.datetime.now(dt.timezone.utc)
                state = _STATE_OF_COMMAND[args.apps_command]
                # As DELETE and disable of a task do: return once the sends in flight ended (a send's timeout).
                wait = settings.send_timeout_seconds
                return await admin.set_app_state(store, args.app_key, state, now, in_flight_wait=wait)
            if args.apps_command == "rotate-secret":
                return await admin.rotate_secret(store, args.app_key)
            return await admin.update_app(
                store,
                args.app_key,
                time_zone=args.time_zone,
                max_schedules=args.max_schedules,
                push_key=args.push_key,
                push_secret=_read_push_secret(args.push_secret_file),
                credentials_key=settings.push_credentials_key,
            )
        finally:
            await stores.close()

    print(json.dumps(await _with_database(settings, work)))


class NotServing(Exception):
    """A worker failed before it served (its database, its port): the cause is `__cause__`."""


async def _watch_parent(stop: asyncio.Event, parent: int) -> None:
    """A worker whose parent is gone (SIGKILLed) stops gracefully instead of serving on, unsupervised.

    `parent` is the pid the parent gave on the command line, not os.getppid() read here: the parent may die
    during the worker's second of imports, and the worker would then take its new parent (init) for it."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("the parent process is gone: stopping", extra={"event": "orphaned"})
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def serve(settings: Settings, worker: workerboard.Seat | None = None, parent_pid: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully.

    Stop: close the listener (no new connections), drain (requests in flight finish on their open
    connections, up to SHUTDOWN_TIMEOUT_SECONDS), then aiohttp's shutdown and the cleanup contexts in
    reverse: the engine hands back unfinished sends, the pool closes, the embedded PostgreSQL stops.

    `worker`: this process is one of `serve --workers N`'s; it binds the port with SO_REUSEPORT beside the
    others, and its database is the parent's (DATABASE_URL), which the parent stops. It stops when the process
    `parent_pid` is gone. A worker that fails before it serves raises NotServing, so that its exit code tells
    the parent it never came up (workers.EXIT_NOT_STARTED).
    """
    app = create_app(settings, worker)
    # observe_middleware logs every request with its route template and app key: no aiohttp access log.
    runner = ServiceRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watching = None
    if parent_pid is not None:
        watching = asyncio.create_task(_watch_parent(stop, parent_pid), name="watch-parent")
    try:
        try:
            await runner.setup()  # start-up: database, migrations, engine
            site = web.TCPSite(runner, settings.host, settings.port, reuse_port=worker is not None)
            await site.start()
        except Exception as exc:
            if worker is None:
                raise
            raise NotServing(str(exc) or type(exc).__name__) from exc
        log.info(
            "serving on http://%s:%d",
            settings.host,
            settings.port,
            extra={"event": "serving", "host": settings.host, "port": settings.port},
        )
        await stop.wait()
        started = loop.time()
        log.info("stopping: no new connections, draining requests in flight", extra={"event": "stopping"})
        await site.stop()
        drained = await drain(app, settings.shutdown_timeout_seconds)
        if not drained:
            log.warning("shutdown timeout: cutting the requests still in flight")
    finally:
        stop.set()
        if watching is not None:
            await watching
        await runner.cleanup()
    log.info(
        "stopped in %.2f s",
        loop.time() - started,
        extra={"event": "stopped", "seconds": round(loop.time() - started, 3)},
    )


def healthcheck(settings: Settings, timeout: float = 3.0) -> int:
    """0 when GET /healthz on this host's service answers 200, else 1 (the reason goes to stderr)."""
    # A wildcard listen address is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return 0
            problem = f"status {response.status}"
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, a non-200 status, garbage
        problem = repr(exc)
    print(f"unhealthy: {url}: {problem}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    serving = args.command in (None, "serve")
    worker = None
    if serving and getattr(args, "workers", None) is not None:
        settings = Settings(workers=args.workers)  # as given: `auto` is remembered (Settings.workers_auto)
    if serving and getattr(args, "worker", None) is not None:
        worker = workerboard.Seat(args.worker, workerboard.Board(args.worker_board))
    # The server logs to stdout; the other commands print their results there, so their logs go to stderr.
    # A worker's lines say which worker (and process) wrote them: they share the parent's stdout.
    fields = {} if worker is None else {"worker": worker.index, "pid": os.getpid()}
    logs.install(settings.log_level, sys.stdout if serving else sys.stderr, settings.log_format, fields)
    try:
        if serving and worker is None and settings.workers > 1:
            return asyncio.run(workers.supervise(settings))
        if serving:
            asyncio.run(serve(settings, worker, getattr(args, "parent_pid", None)))
        elif args.command == "healthcheck":
            return healthcheck(settings)
        elif args.command == "migrate":
            applied = asyncio.run(_with_database(settings, migrations.migrate))
            print(json.dumps({"applied": applied}))
        elif args.apps_command == "create":
            asyncio.run(_apps_create(settings, args))
        elif args.apps_command == "list":
            asyncio.run(_apps_list(settings))
        else:
            asyncio.run(_apps_change(settings, args))
    except NotServing as exc:
        log.error(
            "worker %d could not start: %s", args.worker, exc, exc_info=exc.__cause__,
            extra={"event": "worker_not_started"},
        )  # fmt: skip
        return workers.EXIT_NOT_STARTED
    except (ValueError, OSError, migrations.MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
