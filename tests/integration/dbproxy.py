"""A TCP proxy in front of the test PostgreSQL: closing it makes the database unreachable for real.

`cut()` aborts every open connection but keeps accepting new ones (a network blip, a failover, a
connection-killing pooler); `stop()` is an outage. As its own process (the fault suite, bench/faults.py):

    python -m tests.integration.dbproxy --upstream DSN --port 6543 --cut-every 2

prints `listening DSN`, then, from SIGUSR1 until SIGUSR2, cuts every connection each `--cut-every`
seconds, printing one JSON line per cut; SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
import urllib.parse


class DatabaseProxy:
    def __init__(self, upstream_dsn: str) -> None:
        self._upstream = urllib.parse.urlsplit(upstream_dsn)
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._frozen: set[asyncio.StreamWriter] = set()
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
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:  # the database itself is down: refuse, as it would
            writer.transport.abort()
            return
        self._pipes.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        self._pipes.discard(writer)
        self._pipes.discard(up_writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                if writer in self._frozen:
                    continue  # a half-open socket: what is sent never arrives, and nothing says so
                writer.write(chunk)
                await writer.drain()
        writer.close()

    def freeze(self) -> int:
        """Make every open connection half-open: it stays open on both sides, but nothing it carries arrives
        any more (a peer that vanished without a FIN: a failover, a NAT that dropped the flow). New connections
        work. Returns how many were frozen."""
        self._frozen.update(self._pipes)
        return len(self._pipes) // 2

    def cut(self) -> int:
        """Abort every open connection (both sides); new ones are still accepted. Returns how many were cut."""
        pipes = list(self._pipes)
        for writer in pipes:
            writer.transport.abort()
        self._pipes.clear()
        return len(pipes) // 2

    async def stop(self) -> None:
        """Refuse new connections and cut every open one, as a crashed or unplugged database would."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="DSN of the real database")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cut-every", type=float, default=2.0, help="seconds between cuts, once SIGUSR1 came")
    parser.add_argument("--max-cuts", type=int, default=1000, help="stop cutting after this many")
    args = parser.parse_args()

    async def serve() -> None:
        proxy = DatabaseProxy(args.upstream)
        proxy.port = args.port
        await proxy.start()
        print(json.dumps({"listening": proxy.dsn}), flush=True)
        loop = asyncio.get_running_loop()
        cutting = asyncio.Event()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, cutting.set)
        loop.add_signal_handler(signal.SIGUSR2, cutting.clear)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        cuts = 0
        while not stop.is_set() and cuts < args.max_cuts:
            if not cutting.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.05)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.cut_every)
            if cutting.is_set() and not stop.is_set():
                cuts += 1
                print(json.dumps({"cut": cuts, "at": time.time(), "connections": proxy.cut()}), flush=True)
        await stop.wait()
        await proxy.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
