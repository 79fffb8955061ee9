"""Command line: `serve` (default), `migrate`, `apps create`, `apps list`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from service import admin
from service.app import create_app, open_database
from service.settings import Settings
from service.store import database, migrations

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API (the default)")
    commands.add_parser("migrate", help="apply pending migrations and exit")
    apps = commands.add_parser("apps", help="manage apps").add_subparsers(dest="apps_command", required=True)
    create = apps.add_parser("create", help="register an app and print its credentials once, as JSON")
    create.add_argument("--name", required=True)
    create.add_argument("--time-zone", default="UTC", help="IANA zone of the app's zone_type 1 times")
    create.add_argument("--max-schedules", type=int, default=None, help="cap of valid tasks")
    create.add_argument("--push-key", help="app key this app pushes with (http backend)")
    create.add_argument("--push-secret", help="its secret; stored encrypted with PUSH_CREDENTIALS_KEY")
    apps.add_parser("list", help="list apps as JSON lines (never their secrets)")
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


async def _apps_create(settings: Settings, args: argparse.Namespace) -> None:
    async def work(dsn: str) -> None:
        store = await database.Store.connect(dsn, max_size=1)
        try:
            cap = args.max_schedules if args.max_schedules is not None else settings.default_max_schedules
            created = await admin.register_app(
                store,
                args.name,
                args.time_zone,
                cap,
                push_key=args.push_key,
                push_secret=args.push_secret,
                credentials_key=settings.push_credentials_key,
            )
        finally:
            await store.close()
        print(json.dumps(created.to_json()))

    await _with_database(settings, work)


async def _apps_list(settings: Settings) -> None:
    async def work(dsn: str) -> None:
        store = await database.Store.connect(dsn, max_size=1)
        try:
            for app in await store.list_apps():
                print(
                    json.dumps(
                        {
                            "app_key": app.app_key,
                            "name": app.name,
                            "time_zone": app.time_zone,
                            "max_schedules": app.max_schedules,
                            "created_at": app.created_at.isoformat(),
                        }
                    )
                )
        finally:
            await store.close()

    await _with_database(settings, work)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        if args.command in (None, "serve"):
            web.run_app(
                create_app(settings),
                host=settings.host,
                port=settings.port,
                shutdown_timeout=settings.shutdown_timeout_seconds,
                print=lambda _: print(f"Serving on http://{settings.host}:{settings.port}", flush=True),
            )
        elif args.command == "migrate":
            applied = asyncio.run(_with_database(settings, migrations.migrate))
            print(json.dumps({"applied": applied}))
        elif args.apps_command == "create":
            asyncio.run(_apps_create(settings, args))
        else:
            asyncio.run(_apps_list(settings))
    except (ValueError, migrations.MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
