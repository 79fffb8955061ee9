"""The command line and the real `python -m service` process, as an ops person and a new user meet them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest

from service.app import create_app
from service.domain import credentials
from service.settings import Settings
from tests.conftest import MEASURED
from tests.integration.conftest import future_time, schedule_body
from tests.waiting import eventually

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def cli_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DATA_DIR", "PORT")}
    env.update(values)
    return env


def basic(app_key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{app_key}:{secret}".encode()).decode()}


async def test_apps_create_and_list(database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any) -> None:
    env = cli_env(DATABASE_URL=database_url, DATA_DIR=str(tmp_path))
    created = run_cli("apps", "create", "--name", "ops", "--time-zone", "Asia/Shanghai", "--max-schedules", "5", env=env)
    assert created.returncode == 0, created.stderr
    credentials = json.loads(created.stdout)
    assert set(credentials) == {"app_key", "master_secret", "time_zone", "max_schedules"}
    assert (credentials["time_zone"], credentials["max_schedules"]) == ("Asia/Shanghai", 5)

    listed = run_cli("apps", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    apps = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [app["app_key"] for app in apps] == [credentials["app_key"]]
    assert credentials["master_secret"] not in listed.stdout and "secret" not in listed.stdout

    # A dump of the database does not hold the secret in any form a client could replay.
    connection = await asyncpg.connect(database_url)
    try:
        dumped = " ".join(await connection.fetchval("SELECT array_agg(apps::text) FROM apps"))
    finally:
        await connection.close()
    assert credentials["master_secret"] not in dumped

    server = await aiohttp_server(create_app(Settings(database_url=database_url, data_dir=tmp_path)))
    async with aiohttp.ClientSession() as session:
        headers = basic(credentials["app_key"], credentials["master_secret"])
        async with session.get(server.make_url("/v4/schedules"), headers=headers) as response:
            assert response.status == 200


def test_cli_rejects_unknown_time_zone_and_migrate_is_idempotent(database_url: str, tmp_path: pathlib.Path) -> None:
    env = cli_env(DATABASE_URL=database_url, DATA_DIR=str(tmp_path))
    bad = run_cli("apps", "create", "--name", "x", "--time-zone", "Mars/Olympus", env=env)
    assert bad.returncode == 2
    assert 'unknown IANA time zone "Mars/Olympus"' in bad.stderr
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout) == {"applied": []}  # the template is migrated already


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> None:
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError("service exited before serving:\n" + "".join(seen))
        seen.append(line)
        if marker in line:
            return


async def test_serve_on_the_embedded_default_then_sigterm(tmp_path: pathlib.Path) -> None:
    """What the README's quick start does: serve on a new data dir, use the demo app, stop cleanly."""
    port = free_port()
    data_dir = tmp_path / "data"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service",
        cwd=ROOT,
        env=cli_env(DATA_DIR=str(data_dir), PORT=str(port)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        await asyncio.wait_for(_read_until(process.stdout, '"event": "serving"', output), timeout=60)
        demo_file = data_dir / "demo-app.json"
        assert demo_file.stat().st_mode & 0o777 == 0o600
        demo = json.loads(demo_file.read_text())
        # Every line on stdout is one JSON object. The first start names the demo app and the file its
        # credentials are in; the secret itself is in no log line (logs are shipped and kept).
        events = [json.loads(line) for line in output]
        [created] = [event for event in events if event.get("event") == "demo_app_created"]
        assert (created["app_key"], created["credentials_file"]) == (demo["app_key"], str(demo_file))
        assert not any(demo["master_secret"] in line for line in output)
        headers = basic(demo["app_key"], demo["master_secret"])
        base = f"http://127.0.0.1:{port}/v4/schedules"
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(base, json=schedule_body(time=future_time(600))) as response:
                assert response.status == 200
                schedule_id = (await response.json())["schedule_id"]
            async with session.get(f"{base}/{schedule_id}") as response:
                assert (await response.json())["schedule_id"] == schedule_id
            async with session.get(base) as response:
                assert (await response.json())["total_count"] == 1
            async with session.delete(f"{base}/{schedule_id}") as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=30)
    assert returncode == 0, "".join(output)
    pgdata = str((data_dir / "postgres").resolve())
    leftovers = [
        proc.pid
        for proc in psutil.process_iter(attrs=["name", "cmdline"])
        if proc.info["name"] == "postgres" and pgdata in " ".join(proc.info["cmdline"] or [])
    ]
    assert leftovers == [], "the embedded PostgreSQL outlived the service"


async def _read_to_end(stream: asyncio.StreamReader, seen: list[str]) -> None:
    while line := (await stream.readline()).decode():
        seen.append(line)


def postgres_processes(data_dir: pathlib.Path) -> list[int]:
    pgdata = str((data_dir / "postgres").resolve())
    return [
        proc.pid
        for proc in psutil.process_iter(attrs=["name", "cmdline"])
        if proc.info["name"] == "postgres" and pgdata in " ".join(proc.info["cmdline"] or [])
    ]


async def test_sigterm_finishes_the_request_in_flight_then_stops_everything(
    tmp_path: pathlib.Path, record_property: Callable[[str, object], None]
) -> None:
    """SIGTERM while a create is mid-body: the listener closes, the request still completes 200, the
    process exits 0 and the embedded PostgreSQL is gone. The shutdown time is measured and bounded."""
    port = free_port()
    data_dir = tmp_path / "data"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service",
        cwd=ROOT,
        env=cli_env(DATA_DIR=str(data_dir), PORT=str(port), SHUTDOWN_TIMEOUT_SECONDS="10"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    try:
        await asyncio.wait_for(_read_until(process.stdout, '"event": "serving"', output), timeout=60)
        drain = asyncio.create_task(_read_to_end(process.stdout, output))  # keep the pipe flowing
        assert postgres_processes(data_dir), "the embedded PostgreSQL should run while the service does"
        demo = json.loads((data_dir / "demo-app.json").read_text())
        body = json.dumps(schedule_body(time=future_time(600), name="created_during_shutdown")).encode()
        first_half_sent = asyncio.Event()
        loop = asyncio.get_running_loop()
        listener_closed = asyncio.Event()

        async def slow_body() -> Any:
            yield body[: len(body) // 2]
            first_half_sent.set()
            await listener_closed.wait()  # the rest only once the stop has begun
            yield body[len(body) // 2 :]

        async def stopping() -> bool:
            # Logged just before the listener closes, in the same step of the service's event loop.
            return any('"event": "stopping"' in line for line in output)

        base = f"http://127.0.0.1:{port}/v4/schedules"
        headers = {**basic(demo["app_key"], demo["master_secret"]), "Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            in_flight = asyncio.create_task(session.post(base, data=slow_body(), headers=headers))
            await first_half_sent.wait()
            # The server is in the handler, reading the body. Nothing outside the process shows that moment
            # (the request is logged when it ends), so this stays a bounded wait.
            await asyncio.sleep(0.5)
            sent_at = loop.time()
            process.send_signal(signal.SIGTERM)
            await eventually(stopping, what="the service's stopping line")
            with pytest.raises(aiohttp.ClientConnectionError):  # no new connection is accepted any more
                async with session.get(f"http://127.0.0.1:{port}/healthz"):
                    pass
            listener_closed.set()
            response = await asyncio.wait_for(in_flight, timeout=15)
            async with response:
                assert response.status == 200, await response.text()
                assert (await response.json())["name"] == "created_during_shutdown"
            returncode = await asyncio.wait_for(process.wait(), timeout=30)
            shutdown_seconds = loop.time() - sent_at
    finally:
        if process.returncode is None:  # the test failed early: do not leave the service behind
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=30)
    await asyncio.wait_for(drain, timeout=5)  # stdout closes with the process
    assert returncode == 0, "".join(output)
    assert postgres_processes(data_dir) == [], "the embedded PostgreSQL outlived the service"
    events = [json.loads(line) for line in output]
    assert events[-2]["message"] == "embedded PostgreSQL stopped"
    assert events[-1]["event"] == "stopped"
    # The client's check that the listener is closed, the rest of the request, the engine stop, the pool and a
    # fast PostgreSQL stop.
    assert shutdown_seconds < 8, shutdown_seconds
    record_property(MEASURED, f"shutdown: SIGTERM with a request in flight to exit 0, PostgreSQL stopped: {shutdown_seconds:.2f} s")


def test_apps_create_reads_the_push_secret_from_stdin_or_a_file_never_argv(
    database_url: str, tmp_path: pathlib.Path
) -> None:
    key = credentials.new_encryption_key()
    env = cli_env(DATABASE_URL=database_url, DATA_DIR=str(tmp_path), PUSH_CREDENTIALS_KEY=key)
    argv = [sys.executable, "-m", "service", "apps", "create", "--name", "pushy", "--push-key", "pk"]
    from_stdin = subprocess.run(
        [*argv, "--push-secret-file", "-"], cwd=ROOT, env=env, input="secret-from-stdin\n", capture_output=True,
        text=True, timeout=60,
    )
    assert from_stdin.returncode == 0, from_stdin.stderr
    secret_file = tmp_path / "push-secret"
    secret_file.write_text("secret-from-file\n", encoding="utf-8")
    from_file = subprocess.run([*argv, "--push-secret-file", str(secret_file)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
    assert from_file.returncode == 0, from_file.stderr
    on_argv = subprocess.run([*argv, "--push-secret", "leaked"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
    assert on_argv.returncode == 2 and "unrecognized arguments: --push-secret" in on_argv.stderr

    async def stored() -> list[str]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch("SELECT push_secret_encrypted FROM apps WHERE push_key = 'pk'")
        finally:
            await connection.close()
        return sorted(credentials.decrypt_push_secret(bytes(row[0]), key) for row in rows)

    assert asyncio.run(stored()) == ["secret-from-file", "secret-from-stdin"]
