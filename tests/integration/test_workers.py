"""`python -m service serve --workers 2`, the real processes: one parent, two workers on one port."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import psutil
import pytest

from service import metrics, workerboard, workers
from service import settings as settings_module
from service.app import create_app
from tests.integration.conftest import future_time, schedule_body
from tests.integration.test_cli_and_serve import (
    ROOT,
    _read_to_end,
    basic,
    cli_env,
    free_port,
    postgres_processes,
)
from tests.standin import StandIn
from tests.waiting import eventually


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus text, or None when it is absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def events(output: list[str], event: str) -> list[dict[str, Any]]:
    return [entry for entry in map(json.loads, list(output)) if entry.get("event") == event]


async def test_two_workers_share_the_port_the_metrics_and_the_readiness(tmp_path: pathlib.Path) -> None:
    """Both workers answer; a task fires once; /metrics counts every worker's requests; a SIGKILLed worker is
    restarted while /readyz says 503 naming it; SIGTERM to the parent drains both, stops PostgreSQL, exits 0."""
    standin = StandIn()
    await standin.start()
    port = free_port()
    data_dir = tmp_path / "data"
    process, output, reading = await _serve_workers(
        data_dir, port, PUSH_API_URL=standin.url, PUSH_REQUIRE_CREDENTIALS="false"
    )
    base = f"http://127.0.0.1:{port}"
    # A new connection for every request, so the kernel spreads them over the workers.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def readyz() -> tuple[int, str] | None:
        try:
            async with session.get(f"{base}/readyz") as response:
                return response.status, (await response.json())["status"]
        except aiohttp.ClientError:  # refused while no worker listens, or reset by a worker being killed
            return None

    try:
        await eventually(readyz, "ready", until=lambda answer: answer == (200, "ready"), timeout=60)
        # Once ready, the parent's PostgreSQL serves both; the workers started none of their own.
        assert len(events(output, "serving")) == 2
        assert len(events(output, "demo_app_created")) == 1
        worker_processes = psutil.Process(process.pid).children()
        assert len(worker_processes) == 2

        # Both workers answer: each request's log line names the worker process that answered it.
        for _ in range(40):
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200

        def healthz_lines() -> list[dict[str, Any]]:
            return [entry for entry in events(output, "request") if entry["route"] == "/healthz"]

        lines = await eventually(healthz_lines, "the 40 request lines", until=lambda lines: len(lines) == 40)
        pids = {entry["pid"] for entry in lines}
        assert pids == {worker.pid for worker in worker_processes}, "both workers answer"

        # /metrics counts every worker's requests, whichever worker answers the scrape.
        for _ in range(3):
            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
            assert metric(text, "push_http_requests_total", method="GET", route="/healthz", status="200") == 40
        assert metric(text, "push_db_pool_max_connections") == 20  # DB_POOL_SIZE of each live worker
        assert metric(text, "push_due_backlog", kind="fires") is not None  # read once, not once per worker
        assert "process_resident_memory_bytes" not in text  # one process's figure: left out with workers

        # A task created through one worker is sent once, by whichever engine planned it.
        demo = json.loads((data_dir / "demo-app.json").read_text())
        headers = basic(demo["app_key"], demo["master_secret"])
        async with session.post(
            f"{base}/v4/schedules", json=schedule_body(time=future_time(2)), headers=headers
        ) as response:
            assert response.status == 200, await response.text()

        async def sent() -> float | None:
            async with session.get(f"{base}/metrics") as response:
                return metric(await response.text(), "push_runs_total", outcome="sent")

        await eventually(sent, "the run recorded sent", until=lambda value: value == 1, timeout=20)
        assert len(standin.deliveries) == 1, standin.deliveries

        # SIGKILL one worker: the parent restarts it; /readyz answers 503 naming it until it is back.
        killed = worker_processes[1]
        seen: list[tuple[int, str]] = []

        async def ready_again() -> bool:
            answer = await readyz()
            if answer is not None and answer[0] == 503:
                seen.append(answer)
            return answer == (200, "ready") and len(seen) > 0

        killed.send_signal(signal.SIGKILL)
        await eventually(ready_again, "ready again after the restart", timeout=30)
        assert all(re.fullmatch(r"worker \d( \(pid \d+\))?: .+", status) for _, status in seen), seen
        assert any(status.startswith("worker 1") for _, status in seen), seen
        [restart] = events(output, "worker_restart")
        assert (restart["worker"], restart["dead_pid"], restart["exit"]) == (1, killed.pid, -signal.SIGKILL)
        assert restart["delay_seconds"] == workers.RESTART_FIRST_SECONDS
        now = {worker.pid for worker in psutil.Process(process.pid).children()}
        assert len(now) == 2 and killed.pid not in now and worker_processes[0].pid in now

        # Killed again young (well within STEADY_SECONDS of its start): the supervisor waits twice as long.
        [again] = [worker for worker in psutil.Process(process.pid).children() if worker.pid != worker_processes[0].pid]
        seen.clear()
        again.send_signal(signal.SIGKILL)
        await eventually(ready_again, "ready again after the second restart", timeout=30)
        first, second = events(output, "worker_restart")
        assert (second["worker"], second["dead_pid"]) == (1, again.pid)
        assert second["delay_seconds"] == 2 * first["delay_seconds"]
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
        # The dead worker's counts stay in the totals; its pool left with it, the new worker's came.
        assert metric(text, "push_http_requests_total", method="GET", route="/healthz", status="200") == 41
        assert metric(text, "push_db_pool_max_connections") == 20
        # The dead workers' files were folded into the archive: what a scrape reads does not grow with deaths.
        live = workers_of(process.pid)
        command = live[0].cmdline()
        board = pathlib.Path(command[command.index("--worker-board") + 1])
        counter_files = {path.name for path in (board.parent / "metrics").glob("counter_*.db")}
        assert counter_files <= {"counter_archive.db"} | {f"counter_{worker.pid}.db" for worker in live}, counter_files
        assert "counter_archive.db" in counter_files
    finally:
        await session.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=60)
        await asyncio.wait_for(reading, timeout=5)
        await standin.stop()
    assert returncode == 0, "".join(output)
    assert postgres_processes(data_dir) == [], "the embedded PostgreSQL outlived the service"
    stopped = events(output, "stopped")
    assert len(stopped) == 3 and stopped[-1]["exit"] == 0  # each worker's, then the parent's last
    assert json.loads(output[-2])["message"] == "embedded PostgreSQL stopped"


def test_workers_setting_takes_a_number_or_auto() -> None:
    assert settings_module.Settings(workers="3").workers == 3
    assert settings_module.Settings(workers="auto").workers == settings_module.available_cores() >= 1
    assert settings_module.Settings().workers == 1
    assert settings_module.Settings(workers=" Auto ").workers_auto
    assert not settings_module.Settings(workers="3").workers_auto and not settings_module.Settings().workers_auto


async def test_workers_past_the_databases_connections_are_refused_or_lowered(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each worker may hold 210 connections with DB_POOL_SIZE 200 (200 + the engine's 6 and its LISTEN + the
    probes' 2 + the app-change LISTEN), more than any test server takes: a number given is refused, `auto`
    starts one worker and says why; a size that fits starts what was asked."""
    asked = settings_module.Settings(workers="3", db_pool_size=200, database_url=database_url)
    with pytest.raises(workers.WorkersDoNotFit, match=r"^3 workers need 630 database connections \(210 each"):
        await workers.workers_that_fit(asked, database_url)

    auto = settings_module.Settings(workers="auto", db_pool_size=200, database_url=database_url)
    with caplog.at_level(logging.WARNING, logger="service.workers"):
        assert await workers.workers_that_fit(auto, database_url) == 1
    assert [record.getMessage() for record in caplog.records if getattr(record, "event", None) == "workers_lowered"]

    fitting = settings_module.Settings(workers="2", db_pool_size=1, database_url=database_url)
    assert await workers.workers_that_fit(fitting, database_url) == 2


async def test_serve_refuses_workers_the_database_cannot_hold(tmp_path: pathlib.Path) -> None:
    """End to end, on the embedded server (100 connections): exit 2 with the reason, PostgreSQL stopped."""
    data_dir = tmp_path / "data"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", "--workers", "3",
        cwd=ROOT,
        env=cli_env(DATA_DIR=str(data_dir), PORT=str(free_port()), DB_POOL_SIZE="40"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    await asyncio.wait_for(_read_to_end(process.stdout, output), timeout=60)
    assert await asyncio.wait_for(process.wait(), timeout=10) == 2, "".join(output)
    [refused] = events(output, "workers_do_not_fit")
    assert refused["message"].startswith("not starting: 3 workers need 150 database connections (50 each")
    assert "lower WORKERS or DB_POOL_SIZE, or raise the server's max_connections" in refused["message"]
    assert events(output, "serving") == []
    assert postgres_processes(data_dir) == [], "the embedded PostgreSQL outlived the refusal"


def test_posts_from_two_threads_of_a_worker_do_not_collide(tmp_path: pathlib.Path) -> None:
    """A worker posts from its readiness thread and, as it begins to drain, from its loop's thread: each post
    lands whole. (They shared one staging file, and one's rename took the other's from under it: the worker
    died of FileNotFoundError as it stopped, seen when a parent was SIGKILLed just after start.)"""
    board = workerboard.Board(tmp_path)
    failures: list[str] = []

    def post_many(status: str) -> None:
        for _ in range(300):
            if not board.post(0, 4242, status):
                failures.append(status)

    posters = [threading.Thread(target=post_many, args=(status,)) for status in ("ready", "draining")]
    for poster in posters:
        poster.start()
    for poster in posters:
        poster.join()
    assert failures == []
    assert board.status(0) in ("ready", "draining")


def test_the_board_names_the_first_worker_not_ready(tmp_path: pathlib.Path) -> None:
    board = workerboard.Board(tmp_path)
    board.post(0, 100, "ready")
    board.post(1, None, "starting")
    assert board.first_not_ready() == "worker 1: starting"
    assert board.first_not_ready(besides=1) is None
    board.post(1, 101, "ready")
    assert board.first_not_ready() is None
    board.post(0, 100, "draining")
    assert board.first_not_ready() == "worker 0 (pid 100): draining"


async def _serve_workers(
    data_dir: pathlib.Path, port: int, **settings: str
) -> tuple[asyncio.subprocess.Process, list[str], asyncio.Task[None]]:
    """`serve --workers 2` on the embedded database in `data_dir`, with `settings` added to its environment:
    the process, its output lines as they come, and the task reading them."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", "--workers", "2",
        cwd=ROOT,
        env=cli_env(DATA_DIR=str(data_dir), PORT=str(port), HOST="127.0.0.1", **settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    return process, output, asyncio.create_task(_read_to_end(process.stdout, output))


def workers_of(parent: int) -> list[psutil.Process]:
    """The parent's workers (the embedded PostgreSQL is not its child: pg_ctl detaches it)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return [child for child in psutil.Process(parent).children() if "--worker" in child.cmdline()]
    return []


async def _stop_all(
    process: asyncio.subprocess.Process,
    reading: asyncio.Task[None],
    data_dir: pathlib.Path,
    orphans: Sequence[psutil.Process] = (),
) -> None:
    """What a failed test (or a SIGKILLed parent) may leave behind, killed: the parent, its workers, workers
    orphaned earlier, the embedded PostgreSQL."""
    for worker in [*workers_of(process.pid), *orphans]:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()
    if process.returncode is None:
        process.kill()
    await asyncio.wait_for(reading, timeout=5)
    for pid in postgres_processes(data_dir):
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).terminate()


async def test_a_port_taken_stops_the_service_instead_of_restarting_forever(tmp_path: pathlib.Path) -> None:
    """Another program holds the port (without SO_REUSEPORT): each worker fails to bind on its first start,
    exits EXIT_NOT_STARTED, and the parent stops with exit 1 and the database stopped. (A worker's cleanup
    posts "draining" to the board, so the board alone could not tell; the service restarted them forever.)"""
    data_dir = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        process, output, reading = await _serve_workers(data_dir, holder.getsockname()[1])
        try:
            returncode = await asyncio.wait_for(process.wait(), timeout=90)
            left_running = postgres_processes(data_dir)
        finally:
            await _stop_all(process, reading, data_dir)
    assert returncode == 1, "".join(output)
    assert events(output, "worker_failed_to_start"), "".join(output)
    assert events(output, "worker_restart") == [], "a worker that never came up was restarted"
    not_started = events(output, "worker_not_started")
    assert not_started and all("address already in use" in entry["message"].lower() for entry in not_started)
    assert left_running == [], "the embedded PostgreSQL outlived the service"


# When an early SIGTERM is sent: while the parent migrates the database it has just started (before the fix it
# was killed outright, PostgreSQL left running), or as soon as the workers exist, before they have handlers of
# their own (their default action kills them, -SIGTERM, the stop asked for with nothing held yet; it was exit 1).
EARLY_SIGTERMS: dict[str, Callable[[list[str], int], bool]] = {
    "while the parent migrates": lambda output, _: any("applied migration 0001" in line for line in output),
    "as the workers start": lambda _, parent: len(workers_of(parent)) == 2,
}


@pytest.mark.parametrize("moment", list(EARLY_SIGTERMS))
async def test_an_early_sigterm_is_a_clean_stop(tmp_path: pathlib.Path, moment: str) -> None:
    """A SIGTERM early in the start (EARLY_SIGTERMS): exit 0 and the embedded PostgreSQL stopped; while the
    parent migrates, it finishes its start-up first and starts no worker."""
    data_dir = tmp_path / "data"
    process, output, reading = await _serve_workers(data_dir, free_port())
    try:
        await eventually(lambda: EARLY_SIGTERMS[moment](output, process.pid), moment, timeout=60, interval=0.01)
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=60)
        left_running = postgres_processes(data_dir)
    finally:
        await _stop_all(process, reading, data_dir)
    assert returncode == 0, "".join(output)
    assert left_running == [], "the embedded PostgreSQL outlived the service"
    assert json.loads(output[-2])["message"] == "embedded PostgreSQL stopped", "".join(output)
    if moment == "while the parent migrates":
        assert events(output, "workers_starting") == [] and events(output, "serving") == []


async def test_workers_of_a_parent_killed_early_stop(tmp_path: pathlib.Path) -> None:
    """The parent SIGKILLed while its workers are still importing: each worker knows its parent's pid from its
    command line, sees it gone once it runs, and stops. (They took their new parent, init, for theirs, and
    served on unsupervised.)"""
    data_dir = tmp_path / "data"
    process, output, reading = await _serve_workers(data_dir, free_port())
    found: list[psutil.Process] = []
    try:
        found.extend(await eventually(lambda: workers_of(process.pid), "the workers", timeout=60, interval=0.01))
        process.kill()
        await process.wait()

        def alive() -> list[psutil.Process]:
            return [worker for worker in found if worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE]

        await eventually(alive, "the orphaned workers stopped", until=lambda left: left == [], timeout=60)
    finally:
        await _stop_all(process, reading, data_dir, found)
    assert events(output, "orphaned"), "".join(output)


class _RefusedForks(workers.Supervisor):
    """A supervisor whose worker 1 cannot be started twice (as a fork refused with EAGAIN at pids.max), and
    whose workers are then a harmless process instead of the service."""

    refusals = 2

    def worker_command(self, index: int) -> list[str]:
        if index == 1 and self.refusals > 0:
            self.refusals -= 1
            return [str(self.metrics_dir / "no-such-interpreter")]
        return [sys.executable, "-c", "import time; time.sleep(600)"]


async def test_a_worker_that_cannot_be_started_is_tried_again(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Starting a worker fails: its seat tries again after the restart backoff, and the board says why
    meanwhile; the board's own writes failing (a full disk) stop nothing either. (The seat's task died of the
    exception: that worker was never started again, /readyz said 503 for good, and the stop raised it.)"""
    supervisor = _RefusedForks(settings_module.Settings(), "postgresql://unused", tmp_path)
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.INFO, logger="service.workers"):
        running = asyncio.create_task(supervisor.run(2))
        try:

            def restarts() -> list[logging.LogRecord]:
                return [record for record in caplog.records if getattr(record, "event", None) == "worker_restart"]

            def both_running() -> bool:
                return all(index in supervisor.processes for index in (0, 1))

            await eventually(both_running, "worker 1 started at its third try", timeout=30)
            refused = restarts()
            assert [record.worker for record in refused] == [1, 1]  # type: ignore[attr-defined]
            assert all(record.ended.startswith("could not be started") for record in refused)  # type: ignore[attr-defined]
            assert [record.delay_seconds for record in refused] == [0.5, 1.0]  # type: ignore[attr-defined]

            # The board's directory gone: its posts fail, the supervisor restarts a dead worker all the same.
            shutil.rmtree(supervisor.board.directory)
            dead = supervisor.processes[0]
            dead.kill()
            await eventually(lambda: supervisor.processes[0] is not dead, "worker 0 restarted", timeout=30)
            assert any(getattr(record, "event", None) == "board_not_posted" for record in caplog.records)
        finally:
            supervisor.stop()
            code = await asyncio.wait_for(running, timeout=30)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    assert code == 0  # both stopped by the SIGTERM asked for


def test_a_dead_workers_metrics_are_folded_into_the_archive(tmp_path: pathlib.Path) -> None:
    """Three processes count requests in one multiprocess directory and exit. Folding each away leaves the
    totals as they were (counters and histograms), and the directory holding the archive alone; scrapes taken
    all the while, from another thread, never fail and always see the same totals."""
    directory = str(tmp_path)
    code = "from service import metrics\nfor _ in range({}): metrics.record_request('GET', '/healthz', 200, 0.002)"
    pids = []
    for count in (3, 5, 7):
        dead = subprocess.Popen(
            [sys.executable, "-c", code.format(count)], cwd=ROOT, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        )
        assert dead.wait(timeout=60) == 0
        pids.append(dead.pid)

    def totals() -> tuple[float | None, float | None]:
        text = metrics.every_worker(directory).decode()
        return (
            metric(text, "push_http_requests_total", method="GET", route="/healthz", status="200"),
            metric(text, "push_http_request_duration_seconds_count", method="GET", route="/healthz"),
        )

    assert totals() == (15, 15)
    assert sorted(path.name for path in tmp_path.glob("counter_*.db")) == sorted(f"counter_{pid}.db" for pid in pids)
    seen: list[tuple[float | None, float | None]] = []
    folding = threading.Event()

    def scrape_while_folding() -> None:
        while not folding.is_set():
            seen.append(totals())

    scraper = threading.Thread(target=scrape_while_folding)
    scraper.start()
    try:
        for pid in pids:
            metrics.fold_dead_process(pid, directory)
    finally:
        folding.set()
        scraper.join()
    assert totals() == (15, 15)
    assert seen and set(seen) == {(15, 15)}
    assert sorted(path.name for path in tmp_path.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]


def test_a_dead_workers_file_cut_short_is_removed_not_read(tmp_path: pathlib.Path) -> None:
    """A worker killed as it created a metrics file leaves it empty: prometheus_client's reader fails on it, so
    left in the directory it would fail every scrape. The fold removes it and names it."""
    (tmp_path / "counter_4242.db").touch()
    with pytest.raises(Exception, match="unpack"):
        metrics.every_worker(str(tmp_path))
    assert metrics.fold_dead_process(4242, str(tmp_path)) == ["counter_4242.db"]
    assert not (tmp_path / "counter_4242.db").exists()
    assert metrics.every_worker(str(tmp_path)) == b""


FOLD_ON_A_FULL_DISK = """
import os, subprocess, sys
from service import metrics
directory = sys.argv[1]
code = "from service import metrics\\nmetrics.record_request('GET', '/healthz', 200, 0.002)"
worker = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory})
assert worker.returncode == 0
for name in os.listdir(directory):  # the fold removes these first, and would have their page to write in
    if name.startswith("gauge_"):
        os.remove(os.path.join(directory, name))
filler = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(filler, b"x" * 4096)
except OSError:
    os.close(filler)
pid = int(next(name for name in os.listdir(directory) if name.startswith("counter_"))[len("counter_"):-3])
try:
    metrics.fold_dead_process(pid, directory)
except OSError as exc:
    print("OSError", exc.errno, sorted(name for name in os.listdir(directory) if name != "filler"))
"""


def test_a_full_disk_fails_the_fold_with_an_error_the_parent_survives(tmp_path: pathlib.Path) -> None:
    """The fold on a full disk (a 256 KiB tmpfs, in a mount namespace of its own): an OSError the parent logs,
    the dead worker's file still there and counted, nothing half-written left. (It wrote through the map of a
    sparse file, and the page fault on the full disk killed the process with SIGBUS.)"""
    small = tmp_path / "small"
    small.mkdir()
    script = tmp_path / "fold.py"
    script.write_text(FOLD_ON_A_FULL_DISK)
    if shutil.which("unshare") is None or subprocess.run(
        ["unshare", "--mount", "--map-root-user", "true"], capture_output=True
    ).returncode:
        pytest.skip("no mount namespaces here (unshare)")
    mounted = f"mount -t tmpfs -o size=256k tmpfs {small} && exec {sys.executable} {script} {small}"
    done = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", mounted],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr)
    words = done.stdout.split(maxsplit=2)
    assert words[:2] == ["OSError", str(errno.ENOSPC)], done.stdout
    assert "counter_archive.db" not in words[2] and ".new" not in words[2], words[2]
    assert "'counter_" in words[2], "the dead worker's file was kept"


class _DiesOnCue(workers.Supervisor):
    """A supervisor whose one worker kills itself with SIGTERM once the file `cue` exists."""

    cue: pathlib.Path

    def worker_command(self, index: int) -> list[str]:
        waits = f"while not os.path.exists({str(self.cue)!r}): time.sleep(0.01)"
        return [sys.executable, "-c", f"import os, signal, time\n{waits}\nos.kill(os.getpid(), signal.SIGTERM)"]


async def test_a_worker_dead_as_the_stop_comes_keeps_its_exit_code(tmp_path: pathlib.Path) -> None:
    """Waiting on workers with pidfds, as supervise() does: a worker has died and its zombie is not reaped yet
    when the stop's SIGTERM goes out. Its exit code stays its own (-SIGTERM: the stop asked for, exit 0).
    (Process.send_signal reaped the zombie first, the loop's wait got 255, and the stop came out as failed.)"""
    supervisor = _DiesOnCue(settings_module.Settings(), "postgresql://unused", tmp_path)
    supervisor.cue = tmp_path / "die"
    loop = asyncio.get_running_loop()
    workers.wait_on_workers_without_threads()
    running = asyncio.create_task(supervisor.run(1))
    try:
        await eventually(lambda: 0 in supervisor.processes, "the worker started", timeout=30)
        worker = psutil.Process(supervisor.processes[0].pid)
        supervisor.cue.touch()
        # Without yielding to the loop, which would reap it: wait until it is a zombie, then stop.
        deadline = time.monotonic() + 30
        while worker.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)  # noqa: ASYNC251 (blocking the loop is the point: it must not reap the worker)
        assert worker.status() == psutil.STATUS_ZOMBIE
        supervisor.stop()
        assert await asyncio.wait_for(running, timeout=30) == 0
    finally:
        supervisor.stop()
        await asyncio.wait_for(running, timeout=30)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        asyncio.get_event_loop_policy().set_child_watcher(None)  # the default again for the tests after this
    assert supervisor.board.status(0) == "stopped (signal SIGTERM)"


async def test_a_worker_whose_board_cannot_be_written_serves_and_stops(
    settings: settings_module.Settings, aiohttp_server: Any, caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    """Every post to the board fails (its directory is gone, as on a full disk it could not be written): the
    worker logs it, serves, and stops whole. (The post failing killed its readiness loop, and the "draining"
    post raised out of aiohttp's shutdown, cutting the worker's stop short.)"""
    seat = workerboard.Seat(0, workerboard.Board(tmp_path / "no-such-board"))
    with caplog.at_level(logging.WARNING, logger="service.workerboard"):
        server = await aiohttp_server(create_app(settings, seat))
        async with aiohttp.ClientSession() as session, session.get(server.make_url("/healthz")) as response:
            assert response.status == 200

        def not_posted() -> list[str]:
            return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "board_not_posted"]

        await eventually(not_posted, "a post logged as failed")
        await server.close()  # aiohttp's shutdown (the "draining" post), then the cleanup contexts
    assert any(message.startswith("the readiness board: worker 0 draining not posted") for message in not_posted())
