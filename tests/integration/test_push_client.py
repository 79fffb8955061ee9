"""service.engine.pushclient against a real TCP server that answers each request as the test scripts it: how
answers are framed, when a connection is kept and when it is dropped, timeouts, TLS, the connection limit.

The push API's behaviour as the engine sees it (retries, 429, hangs, resets) is tested through the stand-in in
tests/integration/test_engine*.py and tests/faults; these are the client's own rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import pathlib
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.engine import pushclient
from tests.waiting import eventually

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"msg_id\": \"1\"}"


@dataclasses.dataclass
class Request:
    head: bytes
    body: bytes
    connection: int  # which connection it came on, counted from 1

    def header(self, name: str) -> str | None:
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


# What the server does with a request: the bytes to answer (or a future of them), or None to close the
# connection without a word.
Script = Callable[[Request], "bytes | asyncio.Future[bytes] | None"]


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.close_after_answer = False
        self.reset_after_answer = False  # a TCP reset (RST), not a close (FIN)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def close_idle_connections(self) -> None:
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        number = self.connections
        self._writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request = Request(head, b"", number)
                request.body = await reader.readexactly(int(request.header("Content-Length") or 0))
                self.requests.append(request)
                answer = self.script(request)
                if isinstance(answer, asyncio.Future):
                    # Until it is ready, or the client closes the connection (read() then gives b"").
                    closed = asyncio.ensure_future(reader.read(1))
                    await asyncio.wait([answer, closed], return_when=asyncio.FIRST_COMPLETED)
                    if not answer.done():
                        return
                    closed.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await closed
                    answer = answer.result()
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.reset_after_answer:
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    writer.transport.abort()
                    return
                if self.close_after_answer:
                    return
        finally:
            self.open -= 1
            writer.close()


Serve = Callable[..., Awaitable[tuple[ScriptedServer, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[ScriptedServer] = []

    async def start(script: Script, ssl_context: ssl.SSLContext | None = None) -> tuple[ScriptedServer, str]:
        server = ScriptedServer(script)
        port = await server.start(ssl_context)
        servers.append(server)
        scheme = "https" if ssl_context else "http"
        host = "localhost" if ssl_context else "127.0.0.1"
        return server, f"{scheme}://{host}:{port}/v4/push"

    yield start
    for server in servers:
        await server.stop()


@contextlib.asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[pushclient.PushClient]:
    client = pushclient.PushClient(url, **options)
    try:
        yield client
    finally:
        await client.close()


async def post(client: pushclient.PushClient, body: bytes = b"{}", timeout: float = 5.0,
               headers: list[tuple[str, str]] | None = None, cap: int = 65536) -> pushclient.Answer:
    return await client.post(body, headers or [], timeout=timeout, max_answer_bytes=cap)


async def test_a_post_is_one_well_formed_request_and_connections_are_kept_alive(serve: Serve) -> None:
    server, url = await serve(lambda request: OK)
    async with opened(url, limit=10) as client:
        answer = await post(client, b'{"to":"all"}', headers=[("X-Push-Utc-Offset", "+08:00"),
                                                              ("Authorization", "Basic YTpi")])
        for _ in range(4):
            await post(client)
    assert answer == pushclient.Answer(200, {"content-type": "application/json", "content-length": "15"},
                                       b'{"msg_id": "1"}')
    first = server.requests[0]
    assert first.head.startswith(b"POST /v4/push HTTP/1.1\r\n")
    assert first.header("Host") == url.split("/")[2]
    assert first.header("Content-Type") == "application/json"
    assert first.header("Content-Length") == "12" and first.body == b'{"to":"all"}'
    assert first.header("X-Push-Utc-Offset") == "+08:00" and first.header("Authorization") == "Basic YTpi"
    assert server.connections == 1 and len(server.requests) == 5


async def test_a_chunked_answer_is_put_together(serve: Serve) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"msg\r\nB\r\n_id\": \"42\"}\r\n0\r\n\r\n")
    server, url = await serve(lambda request: chunked)
    async with opened(url, limit=10) as client:
        answers = [await post(client), await post(client)]
    assert [answer.body for answer in answers] == [b'{"msg_id": "42"}'] * 2
    assert server.connections == 1


async def test_an_answer_framed_by_the_close_ends_with_it_and_its_connection_is_not_reused(serve: Serve) -> None:
    server, url = await serve(lambda request: b"HTTP/1.1 200 OK\r\n\r\n{\"msg_id\": \"7\"}")
    server.close_after_answer = True
    async with opened(url, limit=10) as client:
        answers = [await post(client), await post(client)]
    assert [answer.body for answer in answers] == [b'{"msg_id": "7"}'] * 2
    assert server.connections == 2


async def test_connection_close_is_honoured(serve: Serve) -> None:
    server, url = await serve(lambda request: OK.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n", 1))
    async with opened(url, limit=10) as client:
        for _ in range(3):
            assert (await post(client)).status == 200
    assert server.connections == 3


async def test_an_answer_is_cut_at_the_cap_and_its_connection_dropped(serve: Serve) -> None:
    big = b"x" * 100_000
    server, url = await serve(lambda request: b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))
    async with opened(url, limit=10) as client:
        answers = [await post(client, cap=1000), await post(client, cap=1000)]
    assert [(answer.status, answer.body) for answer in answers] == [(502, b"x" * 1000)] * 2
    assert server.connections == 2


async def test_an_interim_answer_is_skipped(serve: Serve) -> None:
    _, url = await serve(lambda request: b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    async with opened(url, limit=10) as client:
        answer = await post(client)
    assert answer.status == 200 and answer.body == b'{"msg_id": "1"}'


CLOSED_EARLY = "closed the connection before its answer ended"


@pytest.mark.parametrize(
    "answer, ending, error",
    [
        pytest.param(None, "close", CLOSED_EARLY, id="a close before any answer"),
        pytest.param(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"msg_id"', "close", CLOSED_EARLY,
                     id="an answer cut short by the close"),
        # Not an answer with status 103: the backend would record that push failed for good instead of retrying.
        pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", "close", CLOSED_EARLY,
                     id="an interim answer, then a close"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                     "keep", "switched protocols", id="switching protocols"),
        # Only a close ends an answer framed by it: after a reset its body may be cut anywhere (here in the msg_id).
        pytest.param(b'HTTP/1.1 200 OK\r\n\r\n{"msg_id": "12', "reset", "ConnectionResetError",
                     id="an answer framed by the close, cut by a reset"),
    ],
)
async def test_answers_that_are_connection_errors(serve: Serve, answer: bytes | None, ending: str, error: str) -> None:
    server, url = await serve(lambda request: answer)
    server.close_after_answer = ending == "close"
    server.reset_after_answer = ending == "reset"
    async with opened(url, limit=10) as client:
        with pytest.raises(pushclient.PushConnectionError, match=error):
            await post(client)


async def test_a_head_past_its_cap_is_a_connection_error(serve: Serve) -> None:
    huge = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 4_000_000 + b"\r\nContent-Length: 0\r\n\r\n"
    big_body = b"b" * 200_000
    answers = iter([huge, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big_body), big_body)])
    server, url = await serve(lambda request: next(answers))
    async with opened(url, limit=10) as client:
        started = time.process_time()
        with pytest.raises(pushclient.PushConnectionError, match="head exceeds 65536 bytes"):
            await post(client)
        # Refused once past the cap, not after reading the 4 MB: no more than a few reads' worth of parsing.
        assert time.process_time() - started < 1.0
        # A small head with a body larger than the head's cap, in one read, is an answer like any other.
        answer = await post(client, cap=300_000)
    assert (answer.status, answer.body) == (200, big_body)
    assert server.connections == 2


async def test_a_second_answer_in_the_same_read_drops_the_connection(serve: Serve) -> None:
    stray = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 999\r\nContent-Length: 0\r\n\r\n"
    server, url = await serve(lambda request: OK + stray)
    async with opened(url, limit=10) as client:
        first = await post(client)
        second = await post(client)
    # The answer is the first, untouched by what followed it; the connection that carried both is not reused.
    assert first == second == pushclient.Answer(
        200, {"content-type": "application/json", "content-length": "15"}, b'{"msg_id": "1"}'
    )
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used_again(serve: Serve) -> None:
    server, url = await serve(lambda request: OK)
    async with opened(url, limit=10) as client:
        await post(client)
        server.close_idle_connections()
        await eventually(lambda: server.open, "the server's side closed", until=lambda count: count == 0)
        assert (await post(client)).status == 200  # not a connection error
    assert server.connections == 2


async def test_an_idle_connection_is_not_reused_after_its_keepalive(serve: Serve) -> None:
    server, url = await serve(lambda request: OK)
    async with opened(url, limit=10, keepalive_seconds=0.0) as client:
        for _ in range(3):
            await post(client)
    assert server.connections == 3


async def test_idle_connections_are_closed_after_their_keepalive_without_another_post(serve: Serve) -> None:
    server, url = await serve(lambda request: OK)
    async with opened(url, limit=10, keepalive_seconds=0.3) as client:
        await asyncio.gather(*(post(client) for _ in range(3)))
        assert server.open == 3
        await eventually(lambda: server.open, "the idle connections closed", until=lambda count: count == 0)
        assert (await post(client)).status == 200  # and a new one is made when needed
        assert server.connections == 4


async def test_not_http_is_a_connection_error(serve: Serve) -> None:
    server, url = await serve(lambda request: b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    async with opened(url, limit=10) as client:
        with pytest.raises(pushclient.PushConnectionError, match="not HTTP"):
            await post(client)
    await eventually(lambda: server.open, "the client closed it", until=lambda count: count == 0)


async def test_nothing_listening_is_a_connection_error(serve: Serve) -> None:
    server, url = await serve(lambda request: OK)
    await server.stop()
    async with opened(url, limit=10) as client:
        with pytest.raises(pushclient.PushConnectionError, match="cannot connect"):
            await post(client)


async def test_a_timeout_drops_the_connection_and_the_next_post_gets_a_new_one(serve: Serve) -> None:
    hanging: list[asyncio.Future[bytes]] = []

    def hang_first(request: Request) -> bytes | asyncio.Future[bytes]:
        if len(hanging) == 0:
            hanging.append(asyncio.get_running_loop().create_future())
            return hanging[0]
        return OK

    server, url = await serve(hang_first)
    async with opened(url, limit=10) as client:
        with pytest.raises(TimeoutError):
            await post(client, timeout=0.2)
        await eventually(lambda: server.open, "the timed-out connection closed", until=lambda count: count == 0)
        assert (await post(client)).status == 200
    assert server.connections == 2


async def test_no_more_connections_than_the_limit(serve: Serve) -> None:
    release = asyncio.Event()

    async def slow() -> bytes:
        await release.wait()
        return OK

    server, url = await serve(lambda request: asyncio.ensure_future(slow()))
    async with opened(url, limit=2) as client:
        posts = [asyncio.ensure_future(post(client)) for _ in range(6)]
        await eventually(lambda: len(server.requests), "two requests at the server", until=lambda count: count == 2)
        assert server.open == 2
        release.set()
        answers = await asyncio.gather(*posts)
    assert [answer.status for answer in answers] == [200] * 6
    assert server.most_open == 2 and server.connections == 2


async def test_a_header_with_a_line_break_is_refused_before_sending(serve: Serve) -> None:
    server, url = await serve(lambda request: OK)
    async with opened(url, limit=10) as client:
        with pytest.raises(ValueError, match="line break"):
            await post(client, headers=[("Authorization", "Basic x\r\nX-Evil: 1")])
    assert server.requests == []


def _self_signed(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_https_verifies_the_push_apis_certificate(
    serve: Serve, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert_file, key_file)
    server, url = await serve(lambda request: OK, server_side)

    async with opened(url, limit=10, ssl_context=ssl.create_default_context(cafile=str(cert_file))) as trusting:
        answers = [await post(trusting), await post(trusting)]
    assert [answer.status for answer in answers] == [200, 200] and server.connections == 1

    async with opened(url, limit=10) as default:  # the system's trust store does not know this certificate
        with pytest.raises(pushclient.PushConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(default)

    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # what the README tells an operator with a private CA
    async with opened(url, limit=10) as from_environment:
        assert (await post(from_environment)).status == 200


async def test_a_kept_alive_connection_closed_as_the_request_went_out_is_retried_once_on_a_new_one(
    serve: Serve,
) -> None:
    """The push API's idle timeout can close a connection just as a request is written on it: with no byte of
    an answer back, the request goes again at once on a new connection (its cid makes that safe)."""

    def close_the_first_connection_on_its_second_request(request: Request) -> bytes | None:
        return None if request.connection == 1 and len(server.requests) == 2 else OK

    server, url = await serve(close_the_first_connection_on_its_second_request)
    async with opened(url, limit=10) as client:
        await post(client)
        assert (await post(client, b'{"second": 1}')).status == 200
    assert [(request.connection, request.body) for request in server.requests[1:]] == [
        (1, b'{"second": 1}'), (2, b'{"second": 1}')
    ]


async def test_no_second_try_once_an_answer_began(serve: Serve) -> None:
    def answer_the_second_in_part(request: Request) -> bytes:
        if len(server.requests) == 1:
            return OK
        server.close_after_answer = True
        return b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"msg_id\""

    server, url = await serve(answer_the_second_in_part)
    async with opened(url, limit=10) as client:
        await post(client)
        with pytest.raises(pushclient.PushConnectionError):
            await post(client)
    assert [request.connection for request in server.requests] == [1, 1]


async def test_no_second_try_on_a_new_connection(serve: Serve) -> None:
    server, url = await serve(lambda request: None)
    async with opened(url, limit=10) as client:
        with pytest.raises(pushclient.PushConnectionError):
            await post(client)
    assert len(server.requests) == 1
