"""The ceiling for the API numbers: a bare aiohttp handler doing one asyncpg point query, nothing else.

    python -m bench.bare_server --port 9100 --dsn postgresql://...
"""

from __future__ import annotations

import argparse
import uuid

import asyncpg
from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()

    async def open_pool(app: web.Application):  # type: ignore[no-untyped-def]
        app["pool"] = await asyncpg.create_pool(args.dsn, min_size=10, max_size=10)
        yield
        await app["pool"].close()

    async def one_query(request: web.Request) -> web.Response:
        row = await request.app["pool"].fetchrow(
            "SELECT id, name FROM schedules WHERE id = $1", uuid.UUID(request.match_info["schedule_id"])
        )
        return web.json_response({"schedule_id": str(row["id"]) if row else None, "name": row["name"] if row else None})

    app = web.Application()
    app.cleanup_ctx.append(open_pool)
    app.router.add_get("/bare/{schedule_id}", one_query)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
