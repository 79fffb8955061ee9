"""`serve --workers N`: one parent process, N serving workers on one port.

The parent does what must happen once: it starts the embedded PostgreSQL (when DATABASE_URL is unset), runs
the migrations, checks PUSH_CREDENTIALS_KEY and creates the demo app. Then it starts N workers, each
`python -m service serve --worker K` with DATABASE_URL set to the parent's database, so none of them starts a
server or creates an app. Each worker is a whole replica (API and engine) and binds HOST:PORT with
SO_REUSEPORT: the kernel spreads new connections over them. Replicas already share one database safely.

The parent serves nothing itself. It
- restarts a worker that dies, after a backoff that doubles while it keeps dying young (a crash loop does
  not spin); the dead worker's leased runs are taken over when their leases run out, as a dead replica's;
  a worker that fails on its very first start stops the whole service instead, as a single process would;
  a worker that cannot even be started (the fork refused, EAGAIN) is tried again the same way;
- keeps the shared directories: PROMETHEUS_MULTIPROC_DIR (service.metrics) and the readiness board
  (service.workerboard), folding a dead worker's metrics into the archive and marking its entry down;
- on SIGTERM or SIGINT passes SIGTERM to every worker, waits for them to drain (each within its own
  SHUTDOWN_TIMEOUT_SECONDS), stops the embedded PostgreSQL and exits 0. A SIGTERM during the parent's own
  start-up (the database, the migrations) is kept until that start-up ends: then no worker starts, and the
  database it started is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import shutil
import signal
import sys
import tempfile

from service import metrics, workerboard
from service.app import check_push_credentials_key, connections_per_process, create_demo_app, open_database
from service.settings import Settings
from service.store import database, embedded, migrations
from service.store.stores import Stores

log = logging.getLogger(__name__)

# A worker's restarts: the first after this, doubling while it keeps dying within STEADY_SECONDS, up to the max.
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
STEADY_SECONDS = 30.0
# How long the parent gives a stopping worker before it kills it, in SHUTDOWN_TIMEOUT_SECONDS: a worker's stop
# has three parts of up to that each (the drain of requests in flight, aiohttp's shutdown of the connections,
# the engine's stop), then its pools close; one more for those, and a margin for a loaded machine.
STOP_TIMEOUTS = 4
STOP_MARGIN_SECONDS = 15.0
# A worker that could not start serving (its database, its port) exits with this code (service.cli), so the
# parent tells "never came up" from "died while serving".
EXIT_NOT_STARTED = 3


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit {code}"


def failed_to_start(code: int, status: str | None) -> bool:
    """Whether a worker's life ended before it ever served: it said so (EXIT_NOT_STARTED), or it died of an
    error before it posted anything to the board (an import failing)."""
    return code == EXIT_NOT_STARTED or (code > 0 and status == "starting")


def stopped_as_asked(code: int) -> bool:
    """Whether a worker told to stop ended well: drained (0), or killed by the SIGTERM itself because it came
    before the worker's handlers existed (during its imports), when it held nothing yet; or by the SIGINT of a
    terminal's Ctrl-C, which reaches the workers (the parent's process group) directly."""
    return code in (0, -signal.SIGTERM, -signal.SIGINT)


def young_deaths_after(previous: int, lived_seconds: float) -> int:
    """How many times in a row a worker has died young, counting the death after `lived_seconds` of life: a
    worker that lived STEADY_SECONDS or more was healthy, and its death starts the count again."""
    return 0 if lived_seconds >= STEADY_SECONDS else previous + 1


def restart_delay(young_deaths: int) -> float:
    """Seconds before a dead worker is started again: RESTART_FIRST_SECONDS after a healthy life or the first
    young death, doubling with each further young death in a row, never more than RESTART_MAX_SECONDS."""
    # The exponent is capped: past ~1,000 deaths in a row (eight hours of a crash loop at the max) 2 ** n no
    # longer converts to a float, and the supervisor itself would die of OverflowError.
    doublings = min(max(young_deaths - 1, 0), 64)
    return min(RESTART_MAX_SECONDS, RESTART_FIRST_SECONDS * float(2**doublings))


async def prepare_database(settings: Settings) -> tuple[str, embedded.EmbeddedPostgres | None]:
    """The once-only start-up: the database (started when embedded), migrated, the push key checked, the
    demo app on an embedded database. The server is stopped again if any of it fails."""
    dsn, server = await open_database(settings)
    try:
        await migrations.migrate(dsn)
        stores = await Stores.open(dsn, api_pool_size=1, timeout=settings.db_timeout_seconds)
        try:
            await check_push_credentials_key(stores.schedules, settings)
            if server is not None:
                await create_demo_app(stores.schedules, settings)
        finally:
            await stores.close()
    except BaseException:
        if server is not None:
            await asyncio.to_thread(server.stop)
        raise
    return dsn, server


def _signal(process: asyncio.subprocess.Process, signum: int) -> None:
    """`signum` to a worker not yet reaped. By os.kill, not Process.send_signal: on 3.11 that polls the child
    first and reaps a worker that has just died, whose exit code is then lost (the loop's own wait gets 255,
    CPython gh-87744). A dead worker's pid is not reused until the loop reaps it, so this reaches the worker or
    its zombie, never another process."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


class Supervisor:
    def __init__(
        self, settings: Settings, dsn: str, directory: pathlib.Path, stopping: asyncio.Event | None = None
    ) -> None:
        self.settings = settings
        self.board = workerboard.Board(directory / "ready")
        self.metrics_dir = directory / "metrics"
        self.board.directory.mkdir()
        self.metrics_dir.mkdir()
        self.env = {**os.environ, "DATABASE_URL": dsn, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        # Given when a stop may come before run() (supervise's start-up): set, no worker starts.
        self.stopping = stopping or asyncio.Event()
        self.failed_to_start: str | None = None
        self.seats_failed: set[asyncio.Task[int]] = set()  # logged as they failed

    def worker_command(self, index: int) -> list[str]:
        """The command line of worker `index`."""
        return [
            sys.executable, "-m", "service", "serve",
            "--worker", str(index), "--worker-board", str(self.board.directory), "--parent-pid", str(os.getpid()),
        ]  # fmt: skip

    def stop(self) -> None:
        """SIGTERM to every worker running; the worker loops then end instead of restarting."""
        self.stopping.set()
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for process in self.processes.values():
            _signal(process, signum)

    async def _life(self, index: int) -> tuple[int | None, str]:
        """Worker `index` started and waited for: its exit code and how it ended, or None and why it could not
        be started."""
        self.board.post(index, None, "starting")
        try:
            process = await asyncio.create_subprocess_exec(*self.worker_command(index), env=self.env)
        except OSError as exc:  # the fork refused (EAGAIN at pids.max, ENOMEM), the interpreter gone
            return None, f"could not be started ({exc})"
        self.processes[index] = process
        if self.stopping.is_set():  # the stop came while it was being started
            _signal(process, signal.SIGTERM)
        code = await process.wait()
        await self._fold_metrics(index, process.pid)
        return code, describe_exit(code)

    async def _fold_metrics(self, index: int, pid: int) -> None:
        """The dead worker's metrics files folded into the archive (service.metrics), in a thread: the fold waits
        for scrapes in progress, and a worker frozen mid-scrape must not freeze the parent's loop with it. (Should
        the thread not start, at a pids limit, the fold may still run later: harmless, it is idempotent.)"""
        try:
            unreadable = await asyncio.to_thread(metrics.fold_dead_process, pid, str(self.metrics_dir))
        except Exception:  # a full disk: its files stay, and are still counted; a restart matters more
            log.warning("worker %d's metrics files not folded", index, exc_info=True,
                        extra={"event": "metrics_not_folded", "worker": index})  # fmt: skip
            return
        if unreadable:
            log.warning(
                "worker %d's metrics files %s could not be read (it died creating them): removed",
                index, ", ".join(unreadable), extra={"event": "metrics_unreadable", "worker": index},
            )  # fmt: skip

    async def run_worker(self, index: int) -> int:
        """Worker `index`, restarted whenever it dies, until the service stops; its last exit code (0 when it
        stopped as asked)."""
        loop = asyncio.get_running_loop()
        young_deaths = 0
        first_start = True
        while True:
            started = loop.time()
            code, ended = await self._life(index)
            pid = None if code is None else self.processes[index].pid
            if self.stopping.is_set():
                self.board.post(index, pid, f"stopped ({ended})")
                return 0 if code is None or stopped_as_asked(code) else code
            if first_start and code is not None and failed_to_start(code, self.board.status(index)):
                # It never came up and gave up by itself (a port taken, a bad setting): a restart would fail
                # the same way.
                self.failed_to_start = f"worker {index} (pid {pid}) failed to start ({ended})"
                log.error("%s: stopping", self.failed_to_start, extra={"event": "worker_failed_to_start"})
                self.board.post(index, pid, f"failed to start ({ended})")
                self.stop()
                return code
            if code is not None:
                first_start = False
            young_deaths = young_deaths_after(young_deaths, loop.time() - started)
            delay = restart_delay(young_deaths)
            self.board.post(index, pid, f"down ({ended}), restarting")
            log.warning(
                "worker %d (pid %s) %s; restarting it in %.1f s",
                index,
                pid,
                "ended" if code is not None else ended,
                delay,
                extra={"event": "worker_restart", "worker": index, "dead_pid": pid, "exit": code, "ended": ended,
                       "delay_seconds": delay},
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return 0

    def _seat_ended(self, seat: asyncio.Task[int]) -> None:
        """A seat's loop raised (a bug: run_worker handles what a worker's life can do): its worker would no
        longer be restarted, and /readyz would stay 503, so the whole service stops, with the reason logged."""
        if not seat.cancelled() and seat.exception() is not None and not self.stopping.is_set():
            self.seats_failed.add(seat)
            log.error("%s failed: stopping", seat.get_name(), exc_info=seat.exception(),
                      extra={"event": "supervisor_failed"})  # fmt: skip
            self.stop()

    async def run(self, count: int) -> int:
        """Start `count` workers and supervise them until SIGTERM or SIGINT; 0 when every one drained."""
        if self.stopping.is_set():
            log.info("stopped before any worker started", extra={"event": "stopping"})
            return 0
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        log.info(
            "starting %d workers on http://%s:%d",
            count,
            self.settings.host,
            self.settings.port,
            extra={"event": "workers_starting", "workers": count, "host": self.settings.host,
                   "port": self.settings.port},
        )  # fmt: skip
        # Every entry is on the board before any worker asks it.
        for index in range(count):
            self.board.post(index, None, "starting")
        seats = [asyncio.create_task(self.run_worker(index), name=f"worker-{index}") for index in range(count)]
        for seat in seats:
            seat.add_done_callback(self._seat_ended)
        await self.stopping.wait()
        log.info("stopping: SIGTERM to every worker, waiting for them to drain", extra={"event": "stopping"})
        limit = STOP_TIMEOUTS * self.settings.shutdown_timeout_seconds + STOP_MARGIN_SECONDS
        _, pending = await asyncio.wait(seats, timeout=limit)
        if pending:
            log.error("workers still running after %.0f s: killing them", limit, extra={"event": "workers_killed"})
            self._signal_all(signal.SIGKILL)
            await asyncio.wait(pending)
        failed = [seat for seat in seats if seat.exception() is not None or seat.result() != 0]
        for seat in failed:
            if seat.exception() is not None and seat not in self.seats_failed:
                log.error("%s failed while stopping", seat.get_name(), exc_info=seat.exception(),
                          extra={"event": "supervisor_failed"})  # fmt: skip
        return 0 if not pending and self.failed_to_start is None and not failed else 1


class WorkersDoNotFit(Exception):
    """The workers asked for would need more database connections than the server has room for."""


async def workers_that_fit(settings: Settings, dsn: str) -> int:
    """How many workers to start: WORKERS, if their connections (connections_per_process each) fit in the
    server's room. Past it, workers would fail under load, not at start: their pools grow with traffic, and the
    connections past max_connections are refused mid-burst. So `auto` starts as many as fit (at least one) and
    says so; a number given that does not fit raises WorkersDoNotFit."""
    each = connections_per_process(settings)
    room = await database.connection_room(dsn, settings.db_timeout_seconds)
    fit = room // each
    if settings.workers <= fit:
        return settings.workers
    why = (
        f"{settings.workers} workers need {settings.workers * each} database connections ({each} each: "
        f"DB_POOL_SIZE {settings.db_pool_size}, the engine's, the probes' and the listeners'), and the server "
        f"has room for {room}"
    )
    if not settings.workers_auto:
        raise WorkersDoNotFit(f"{why}: lower WORKERS or DB_POOL_SIZE, or raise the server's max_connections")
    count = max(fit, 1)
    log.warning(
        "WORKERS=auto: starting %d of %d workers: %s (raise max_connections, or lower DB_POOL_SIZE, for more)",
        count,
        settings.workers,
        why,
        extra={"event": "workers_lowered", "workers": count, "cores": settings.workers, "room": room},
    )
    return count


def wait_on_workers_without_threads() -> None:
    """Python 3.11 waits on each child from a thread of its own (ThreadedChildWatcher). At a pids limit, which
    counts threads, the fork can succeed and that thread fail: the worker would run with nobody waiting on it
    or stopping it. A pidfd needs no thread; 3.12 and later use one by default where the kernel has them."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel before 5.3
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.get_event_loop_policy().set_child_watcher(watcher)


async def supervise(settings: Settings) -> int:
    """`serve --workers N` with N > 1: the process's exit code."""
    wait_on_workers_without_threads()
    loop = asyncio.get_running_loop()
    started = loop.time()
    # From the first instant: a SIGTERM during the start-up below must not kill this process with the
    # embedded PostgreSQL it is starting left running. It is kept, and acted on once the start-up ends.
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    dsn, server = await prepare_database(settings)
    directory = pathlib.Path(tempfile.mkdtemp(prefix="push-service-workers-"))
    try:
        count = await workers_that_fit(settings, dsn)
        code = await Supervisor(settings, dsn, directory, stopping).run(count)
    except WorkersDoNotFit as exc:
        log.error("not starting: %s", exc, extra={"event": "workers_do_not_fit"})
        code = 2
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if server is not None:
            await asyncio.to_thread(server.stop)
    log.info(
        "stopped after %.2f s",
        loop.time() - started,
        extra={"event": "stopped", "exit": code},
    )
    return code
