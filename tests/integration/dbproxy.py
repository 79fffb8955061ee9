"""A TCP proxy in front of the test PostgreSQL: closing it makes the database unreachable for real."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse


class DatabaseProxy:
    def __init__(self, upstream_dsn: str) -> None:
        self._upstream = urllib.parse.urlsplit(upstream_dsn)
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        """The upstream DSN, rewritten to go through this proxy on loopback TCP."""
        user = self._upstream.username or "postgres"
        password = f":{self._upstream.password}" if self._upstream.password else ""
        return f"postgresql://{user}{password}@127.0.0.1:{self.port}{self._upstream.path}"

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        query = urllib.parse.parse_qs(self._upstream.query)
        port = self._upstream.port or 5432
        if "host" in query and query["host"][0].startswith("/"):
            return await asyncio.open_unix_connection(f"{query['host'][0]}/.s.PGSQL.{port}")
        return await asyncio.open_connection(self._upstream.hostname or "127.0.0.1", port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._open_upstream()
        self._pipes.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        """Refuse new connections and cut every open one, as a crashed or unplugged database would."""
        for writer in self._pipes:
            writer.transport.abort()
        self._pipes.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
