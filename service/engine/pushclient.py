"""A small HTTP/1.1 client for the one URL the service posts pushes to: keep-alive connections in a pool, each
request written as one buffer, each answer parsed by httptools (llhttp, the parser of Node.js).

Why not aiohttp's ClientSession, which sent the pushes before: a push is one small POST to one origin, and the
session's general request path (cookies, tracing, URL joining, header multidicts, payload objects, response
objects) cost two to three times this client's CPU per push: 10k posts to the stand-in took 2.1-2.3 CPU-s with a
ClientSession as the service used it and 0.6-1.0 with this client (`python -m bench.push_client`; bench/README
"A push client below ClientSession"). In a burst that CPU is taken from the push API sharing the machine, and
from the next pushes.

What it does not do, on purpose: redirects (a push API answers itself: service.engine.backends), proxies,
compression, HTTP/2. What it does, as a production client must: TLS with the system's trust store, answers
framed by Content-Length, chunked or by the connection's close (a clean one: a reset is an error), caps on what an
answer may hold (its body: max_answer_bytes; its head: MAX_HEAD_BYTES), one total timeout per request (waiting
for a connection included, as aiohttp's `total`), idle connections dropped after KEEPALIVE_SECONDS, and a
connection never reused once anything went wrong on it (an error, a timeout, a cancellation, an answer cut at the
cap, `Connection: close`, bytes after the answer that no request asked for). Interim answers (1xx) are skipped;
101 Switching Protocols, which no request asks for, is an error.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import NamedTuple

import httptools

# An idle connection is dropped after this long: a push API closes idle connections too (often after 5 to 75
# s), and reusing one it is closing loses the push's attempt to a connection error. aiohttp's default.
KEEPALIVE_SECONDS = 15.0
USER_AGENT = "push-schedule-service"
# An answer's status line and headers: a push API's are a few hundred bytes. The cap on what an answer may cost
# (max_answer_bytes) is on its body; this is the one on its head, which httptools holds whole until each header
# ends (a 64 MB header cost 150 MB and 5 CPU-s before it).
MAX_HEAD_BYTES = 64 * 1024


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes  # at most the request's max_answer_bytes


class PushConnectionError(Exception):
    """The exchange failed before a whole answer arrived: refused, reset, closed early, or not HTTP."""


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time. The pool hands it out; `exchange` writes the request and waits
    for the answer, which the parser's callbacks assemble."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._answer: asyncio.Future[Answer] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._max_body = 0
        self._status = 0
        self._framed_by_close = False
        self._head_bytes = 0  # read while the answer's head was not yet complete
        self._head_complete = False
        self.reusable = False
        self.exchanges = 0  # begun on this connection
        self.heard = False  # any byte of the current exchange's answer

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A request is one small write: without this, Nagle's algorithm holds a write back for the ACK of the
            # previous one, tens of milliseconds each.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._waiting():
            if self._framed_by_close and exc is None:
                # An answer without a length ends where its connection does: with a close, not a reset.
                self._finish()
            else:
                self._fail(PushConnectionError(f"the push API closed the connection before its answer ended ({exc!r})"))

    def data_received(self, data: bytes) -> None:
        self.heard = True
        if not self._waiting() or self._parser is None:
            # Bytes no request asked for: whatever this connection carries next cannot be trusted.
            self.reusable = False
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(PushConnectionError(f"the push API's answer is not HTTP/1.1: {exc!r}"))
            return
        if not self._head_complete and self._waiting():
            # Counted after feeding, so a read that completes a small head with a large body is not refused.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(PushConnectionError(f"the push API's answer head exceeds {MAX_HEAD_BYTES} bytes"))

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if not self._waiting():
            # A second answer in the same read as the one just finished, which no request asked for: the
            # connection cannot be trusted with another exchange.
            self._fail(PushConnectionError("the push API answered more than it was asked"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._waiting():
            self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        if not self._waiting():
            return
        self._status = self._parser.get_status_code()
        if self._status == 101:
            self._fail(PushConnectionError("the push API switched protocols, which no request asked for"))
            return
        self._head_complete = self._status >= 200  # after an interim answer, the real head follows
        chunked = "chunked" in self._headers.get("transfer-encoding", "").lower()
        self._framed_by_close = self._status >= 200 and "content-length" not in self._headers and not chunked

    def on_body(self, chunk: bytes) -> None:
        if not self._waiting():
            return
        room = self._max_body - self._body_size
        if len(chunk) >= room:
            # The cap: the rest is not read, so the connection cannot carry another exchange.
            self._body.append(chunk[:room])
            self._body_size += room
            self.reusable = False
            self._finish()
            return
        self._body.append(chunk)
        self._body_size += len(chunk)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        if not self._waiting():  # the answer was cut at the cap already
            return
        if 100 <= self._status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._headers, self._body, self._body_size, self._status = {}, [], 0, 0
            return
        self.reusable = self._parser.should_keep_alive() and not self.closed
        self._finish()

    # the exchange

    async def exchange(self, request: bytes, max_answer_bytes: int) -> Answer:
        assert self.transport is not None
        self.exchanges += 1
        self.heard = False
        if self.closed or self.transport.is_closing():
            raise PushConnectionError("the connection to the push API closed before the request was written")
        self._answer = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._headers, self._body, self._body_size = {}, [], 0
        self._max_body, self._status, self._framed_by_close = max_answer_bytes, 0, False
        self._head_bytes, self._head_complete = 0, False
        self.reusable = False
        self.transport.write(request)
        return await self._answer

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def usable(self, now: float, keepalive: float) -> bool:
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and now - self.idle_since < keepalive
        )

    def _waiting(self) -> bool:
        return self._answer is not None and not self._answer.done()

    def _finish(self) -> None:
        assert self._answer is not None and not self._answer.done()
        self._answer.set_result(Answer(self._status, self._headers, b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        if self._waiting():
            assert self._answer is not None
            self._answer.set_exception(exc)
        self.close()


class PushClient:
    """POST to one URL over at most `limit` connections, kept alive between requests."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not url.isascii():
            raise ValueError(f"not an ASCII http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]  # never user:password@ in a Host header
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Content-Type: application/json\r\n"
        ).encode("latin-1")
        self._keepalive = keepalive_seconds
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None

    async def post(
        self, body: bytes, headers: Sequence[tuple[str, str]], *, timeout: float, max_answer_bytes: int
    ) -> Answer:
        """The answer to one POST of `body` (JSON). Raises TimeoutError after `timeout` seconds in all, and
        PushConnectionError when no whole answer came."""
        request = self._request(body, headers)
        async with asyncio.timeout(timeout), self._slots:
            connection = await self._connection()
            try:
                answer = await self._exchange(connection, request, max_answer_bytes)
            except PushConnectionError:
                if connection.exchanges == 1 or connection.heard:
                    raise
                # A kept-alive connection the push API closed as this request went out (its idle timeout): not a
                # word of an answer came back, so it is sent again at once on a new connection. Safe to repeat,
                # as the engine's own retry would be, later: the push's cid is its idempotency key.
                connection = await self._connection(fresh=True)
                answer = await self._exchange(connection, request, max_answer_bytes)
        self._release(connection)
        return answer

    async def _exchange(self, connection: _Connection, request: bytes, max_answer_bytes: int) -> Answer:
        try:
            return await connection.exchange(request, max_answer_bytes)
        except BaseException:  # an error, the timeout, a cancellation: the connection's state is unknown
            connection.close()
            self._open.discard(connection)
            raise

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    def _request(self, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
        lines = [self._head, b"Content-Length: %d\r\n" % len(body)]
        for name, value in headers:
            if "\r" in value or "\n" in value or "\0" in value:
                raise ValueError(f"header {name} holds a line break")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n")
        lines.append(body)
        return b"".join(lines)

    async def _connection(self, fresh: bool = False) -> _Connection:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle and not fresh:
            connection = self._idle.pop()  # the most recently used first: the least likely to be closing
            if connection.usable(now, self._keepalive):
                return connection
            connection.close()
            self._open.discard(connection)
        try:
            _, connection = await loop.create_connection(
                _Connection, self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise PushConnectionError(f"cannot connect to the push API at {self._host}:{self._port}: {exc!r}") from exc
        self._open.add(connection)
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not connection.closed:
            loop = asyncio.get_running_loop()
            connection.idle_since = loop.time()
            self._idle.append(connection)
            if self._sweep is None:
                self._sweep = loop.call_later(self._keepalive, self._drop_expired)
        else:
            connection.close()
            self._open.discard(connection)

    def _drop_expired(self) -> None:
        """Close the connections idle past their keep-alive, so that a quiet service does not hold up to `limit`
        sockets open at the push API; again while any stay idle."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        kept = []
        for connection in self._idle:
            if connection.usable(now, self._keepalive):
                kept.append(connection)
            else:
                connection.close()
                self._open.discard(connection)
        self._idle = kept
        if kept:
            oldest = min(connection.idle_since for connection in kept)
            self._sweep = loop.call_at(oldest + self._keepalive, self._drop_expired)
