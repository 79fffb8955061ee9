"""Shared set-up for the benchmarks: a fresh embedded PostgreSQL, the push stand-in and the service, each in
its own process (as in production: the service does not share an event loop with what it talks to)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import pathlib
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
import psutil

from service import admin
from service.store import embedded, migrations
from service.store.stores import Stores

ROOT = pathlib.Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def machine() -> str:
    workers = os.environ.get("WORKERS", "1")  # the service's processes (serve --workers), passed through
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {dt.date.today()},"
        f" WORKERS={workers}"
    )


def percentiles(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99

    return {"n": len(ordered), "p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": ordered[-1]}


async def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def service_processes(pid: int) -> list[psutil.Process]:
    """A service process and its workers (`serve --workers N` starts N children; one worker runs alone)."""
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def worker_rss_mib(pid: int) -> list[float]:
    """The resident memory of each process that serves: the workers, or the one process when it has none."""
    parent = psutil.Process(pid)
    serving = parent.children(recursive=True) or [parent]
    return [round(process.memory_info().rss / 2**20, 1) for process in serving]


def _is_standin(process: subprocess.Popen[bytes]) -> bool:
    return "tests.standin" in process.args


class Bench:
    """Owns the processes of one benchmark run; use as `async with Bench(...) as bench`."""

    def __init__(self, **service_env: str) -> None:
        self.service_env = service_env
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="push-bench-"))
        self.pg = embedded.EmbeddedPostgres(self.workdir)
        self.processes: list[subprocess.Popen[bytes]] = []
        # Kept apart from `processes`, so a profiler's CPU is never counted as the service's.
        self.profilers: list[subprocess.Popen[bytes]] = []
        self.dsn = ""
        self.standin_url = ""
        self.service_url = ""

    async def __aenter__(self) -> Bench:
        self.dsn = await asyncio.to_thread(self.pg.start)
        await migrations.migrate(self.dsn)
        standin_port = free_port()
        self.standin_url = f"http://127.0.0.1:{standin_port}"
        self._spawn([sys.executable, "-m", "tests.standin", "--port", str(standin_port)], {})
        await _wait_http(self.standin_url + "/_stats")
        return self

    async def start_service(self, log: pathlib.Path | None = None, **extra_env: str) -> str:
        """Start one more service process; its output goes to `log` when given."""
        port = free_port()
        env = {
            "DATABASE_URL": self.dsn,
            "DATA_DIR": str(self.workdir),
            "PORT": str(port),
            "PUSH_API_URL": self.standin_url,
            "PUSH_REQUIRE_CREDENTIALS": "false",  # the stand-in is one tenant's push API
            "LOG_LEVEL": "WARNING",
            **self.service_env,
            **extra_env,
        }
        self._spawn([sys.executable, "-m", "service"], env, log)
        self.service_url = f"http://127.0.0.1:{port}"
        # Ready, not only answering: with WORKERS > 1 the first worker answers while the others still start, and
        # their start-up (about a second of CPU each) would land in what the run measures.
        await _wait_http(self.service_url + "/readyz")
        return self.service_url

    def _spawn(
        self, command: list[str], env: dict[str, str], log: pathlib.Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a process of this run; its stdout and stderr go to `log` when given, else nowhere."""
        full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PUSH_API_URL")}
        full_env.update(env)
        if log is None:
            process = subprocess.Popen(
                command, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        else:
            with open(log, "ab") as output:  # the child keeps its own descriptor
                process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=output, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def profile_service(self, output: str, seconds: float) -> None:
        """Sample the (first) service process with py-spy for `seconds`, written to `output` as folded stacks."""
        service = next(process for process in self.processes if not _is_standin(process))
        py_spy = pathlib.Path(sys.executable).with_name("py-spy")
        self.profilers.append(
            subprocess.Popen(
                [str(py_spy), "record", "--pid", str(service.pid), "--duration", str(max(1, round(seconds))),
                 "--rate", "250", "--format", "raw", "--output", output, "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each part: the service processes, the stand-in, PostgreSQL.

        Take it before and after a window; the difference shows which part held the cores."""
        groups: dict[str, list[psutil.Process]] = {"service": [], "standin": [], "postgres": []}
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                part = "standin" if _is_standin(process) else "service"
                # With WORKERS > 1 the service process is the parent and its workers do the work.
                groups[part].extend(service_processes(process.pid))
        postmaster = self.pg.pgdata / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            server = psutil.Process(int(postmaster.read_text().split()[0]))
            groups["postgres"] = [server, *server.children()]
        totals = {}
        for part, members in groups.items():
            total = 0.0
            for member in members:
                with contextlib.suppress(psutil.Error):
                    times = member.cpu_times()
                    total += times.user + times.system
            totals[part] = total
        return totals

    async def new_app(self, max_schedules: int = 1_000_000) -> admin.NewApp:
        stores = await Stores.open(self.dsn, api_pool_size=1)
        try:
            return await admin.register_app(stores.schedules, "bench", "UTC", max_schedules)
        finally:
            await stores.close()

    async def standin_deliveries(self) -> list[list[Any]]:
        async with aiohttp.ClientSession() as session, session.get(self.standin_url + "/_stats") as response:
            return (await response.json())["delivered"]

    async def __aexit__(self, *exc: object) -> None:
        for profiler in self.profilers:
            profiler.send_signal(signal.SIGINT)  # py-spy writes what it sampled so far, then exits
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.profilers + self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        await asyncio.to_thread(self.pg.stop)
        # The run's database and logs: 1-2 GB after a 100k burst. Left behind, a morning of runs filled the disk.
        if not os.environ.get("BENCH_KEEP_WORKDIR"):
            await asyncio.to_thread(shutil.rmtree, self.workdir, True)
