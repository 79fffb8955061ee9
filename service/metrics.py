"""Prometheus metrics: every metric the service exports is defined here, once per process.

The API records requests, the engine records dispatch outcomes and lateness; neither needs the other, and
the engine records without touching aiohttp's server side. Values that are read, not counted (the due
backlog, the pool), are gathered at scrape time into a registry of their own, so a value that could not be
read is simply absent from that scrape instead of stale.

Labels are bounded: routes are route templates (`/v4/schedules/{schedule_id}`, never an id), unknown paths
share one label, and no label ever carries app data.

With `serve --workers N` each worker is its own process: the parent sets PROMETHEUS_MULTIPROC_DIR before
starting them, so prometheus_client keeps every counter and histogram in memory-mapped files there, and
whichever worker answers a scrape sums every worker's files (dead workers' counts included: totals never go
back). The parent folds a dead worker's counter and histogram files into one archive file per type
(fold_dead_process), so a crash-looping worker does not leave a file per life for every scrape to read. The
pool gauges are kept per live worker and summed ('livesum'); the backlog is read from the shared
database at scrape time, once, by the worker answering. The `process_*` and `python_*` series describe one
process, so they are left out there rather than taken from whichever worker answered.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.registry import Collector

from service.domain import types

# The classic text format (0.0.4): every Prometheus-compatible scraper reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The route label of a request no route matched (404, 405 on an unknown path).
UNMATCHED_ROUTE = "unmatched"

# Set by `serve --workers N` in each worker's environment; prometheus_client reads it when it is imported.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

# No `*_created` series: they double the output and no dashboard of ours reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library
REGISTRY = CollectorRegistry(auto_describe=True)
if MULTIPROCESS_DIR is None:
    prometheus_client.ProcessCollector(registry=REGISTRY)
    prometheus_client.PlatformCollector(registry=REGISTRY)
    prometheus_client.GCCollector(registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "push_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "push_http_request_duration_seconds",
    "Time from request to response, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
RUNS = Counter(
    "push_runs",
    "Send results recorded by this process's engine, by outcome "
    "(sent, failed, retry, cancelled; missed: found too late after downtime, never sent).",
    ["outcome"],
    registry=REGISTRY,
)
SCHEDULES_DISABLED_BY_FAILURES = Counter(
    "push_schedules_disabled_by_failures",
    "Tasks this process's engine disabled because they reached their max_failures consecutive failed runs.",
    registry=REGISTRY,
)
DISPATCH_LATENESS = Histogram(
    "push_dispatch_lateness_seconds",
    "Send-finish instant minus the run's due instant, by outcome of that attempt.",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)

RETENTION_PURGED = Counter(
    "push_retention_purged",
    "Rows the retention sweep of this process's engine purged (RETENTION_DAYS), by kind (schedules, runs).",
    ["kind"],
    registry=REGISTRY,
)


@functools.cache
def _child(metric: Counter | Histogram, *labels: str) -> Any:
    """The series of `metric` for `labels`, looked up once: `labels()` validates and locks on every call,
    which was a tenth of the engine's CPU in a burst. Label values are bounded (see above), so is the cache."""
    return metric.labels(*labels)


def record_run(outcome: str, lateness_seconds: float | None) -> None:
    _child(RUNS, outcome).inc()
    if lateness_seconds is not None:
        _child(DISPATCH_LATENESS, outcome).observe(lateness_seconds)


def record_purged(schedules: int, runs: int) -> None:
    if schedules:
        _child(RETENTION_PURGED, "schedules").inc(schedules)
    if runs:
        _child(RETENTION_PURGED, "runs").inc(runs)


def record_disabled_by_failures(count: int) -> None:
    SCHEDULES_DISABLED_BY_FAILURES.inc(count)


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    _child(HTTP_REQUESTS, method, route, str(status)).inc()
    _child(HTTP_LATENCY, method, route).observe(seconds)


# Workers only: each worker's API pool, set at each scrape it answers and every second (service.app), summed over
# the live workers; a dead worker's share goes with it (mark_process_dead).
POOL_CONNECTIONS = Gauge(
    "push_db_pool_connections",
    "The workers' API database pool connections, by state (summed over the live workers).",
    ["state"],
    registry=None,
    multiprocess_mode="livesum",
)
POOL_MAX_CONNECTIONS = Gauge(
    "push_db_pool_max_connections",
    "The pools' maximum sizes (DB_POOL_SIZE per worker, summed over the live workers).",
    registry=None,
    multiprocess_mode="livesum",
)


def record_pool(pool: types.PoolUsage) -> None:
    """With workers: publish this worker's pool for the scrapes other workers answer."""
    POOL_CONNECTIONS.labels("in_use").set(pool.size - pool.idle)
    POOL_CONNECTIONS.labels("idle").set(pool.idle)
    POOL_MAX_CONNECTIONS.set(pool.max_size)


class _Scraped(Collector):
    """Values read for one scrape, as metric families: never stored in a process's (or a worker's) files."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._families


# The types whose dead processes' files are folded into the archive: summed across processes, whatever their
# pid. (The pool gauges are 'livesum': a dead worker's are removed by mark_process_dead.)
_FOLDED_TYPES = ("counter", "histogram")


@contextlib.contextmanager
def _directory_lock(directory: str, operation: int) -> Iterator[None]:
    """The multiprocess directory's lock: held shared by a scrape while it reads the files, and exclusively by
    the fold, so a scrape sees a dead worker's counts once (in its file or in the archive, never both) and no
    file is removed under it (prometheus_client's reader fails on a counter file that vanished)."""
    with open(os.path.join(directory, "fold.lock"), "a+b") as lock:
        fcntl.flock(lock, operation)
        yield  # closing the file releases the lock, also when the holder dies


def _read_values(path: str) -> list[tuple[str, float]]:
    """A multiprocess file's (key, value) pairs, or [] when there is no such file."""
    try:
        entries = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
    except FileNotFoundError:
        return []
    return [(key, value) for key, value, _, _ in entries]


def _write_values(path: str, values: dict[str, float]) -> None:
    """A new multiprocess file at `path` holding `values`. Its space is allocated before it is mapped: a full
    disk is an OSError here, where writing through the map of a sparse file would kill the process (SIGBUS)."""
    # Each entry: its length (4 bytes), the key padded to 8-byte alignment (at most 8 more), value and timestamp.
    size = 8 + sum(len(key.encode("utf-8")) + 28 for key in values)
    with open(path, "xb") as created:
        os.posix_fallocate(created.fileno(), 0, size)
    written = MmapedDict(path)  # type: ignore[no-untyped-call]
    try:
        for key, value in values.items():
            written.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
    finally:
        written.close()  # type: ignore[no-untyped-call]


def fold_dead_process(pid: int, directory: str) -> list[str]:
    """The bookkeeping after worker `pid` died: its live gauges removed, and its counters and histograms added
    into `<type>_archive.db` and its own files removed. The totals a scrape shows do not change; the files it
    reads stay one per live worker and type, plus the archive, however many workers died before.

    Returns the dead worker's files that could not be read (it was killed as it created one): they are removed
    uncounted, for left there they would fail every scrape. An OSError (a full disk) leaves everything as it
    was, still counted."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    unreadable = []
    with _directory_lock(directory, fcntl.LOCK_EX):
        for kind in _FOLDED_TYPES:
            dead = os.path.join(directory, f"{kind}_{pid}.db")
            try:
                dead_values = _read_values(dead)
            except (struct.error, ValueError):  # cut short: no length header, or a key cut in its middle
                unreadable.append(os.path.basename(dead))
                os.remove(dead)
                continue
            if not dead_values:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(dead)
                continue
            archive = os.path.join(directory, f"{kind}_archive.db")
            totals: dict[str, float] = {}
            for key, value in _read_values(archive) + dead_values:
                totals[key] = totals.get(key, 0.0) + value
            # Written aside (no scrape reads a name that is not *.db) and swapped in whole.
            staging = archive + ".new"
            with contextlib.suppress(FileNotFoundError):
                os.remove(staging)  # left by a fold that failed
            try:
                _write_values(staging, totals)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(staging)
                raise
            os.replace(staging, archive)
            os.remove(dead)
    return unreadable


def every_worker(directory: str) -> bytes:
    """The counters, histograms and live gauges of every worker, dead ones' included, as exposition text."""
    workers = CollectorRegistry()
    multiprocess.MultiProcessCollector(workers, directory)  # type: ignore[no-untyped-call]
    with _directory_lock(directory, fcntl.LOCK_SH):  # a fold holds it for a few milliseconds
        return prometheus_client.generate_latest(workers)


def exposition(backlog: types.DueBacklog | None, pool: types.PoolUsage | None) -> bytes:
    """The text of one scrape: the counters (this process's, or every worker's) plus the values read for this
    scrape, when known."""
    families = []
    if backlog is not None:
        due = GaugeMetricFamily(
            "push_due_backlog", "Work due now and not yet done, by kind (read at scrape time).", labels=["kind"]
        )
        due.add_metric(["fires"], backlog.fires)
        due.add_metric(["retries"], backlog.retries)
        due.add_metric(["expired_leases"], backlog.expired_leases)
        families.append(due)
    if MULTIPROCESS_DIR is not None:
        if pool is not None:
            record_pool(pool)
        scraped = CollectorRegistry()
        scraped.register(_Scraped(families))
        return every_worker(MULTIPROCESS_DIR) + prometheus_client.generate_latest(scraped)
    if pool is not None:
        connections = GaugeMetricFamily(
            "push_db_pool_connections", "This process's database pool connections, by state.", labels=["state"]
        )
        connections.add_metric(["in_use"], pool.size - pool.idle)
        connections.add_metric(["idle"], pool.idle)
        families.append(connections)
        families.append(
            GaugeMetricFamily("push_db_pool_max_connections", "The pool's maximum size (DB_POOL_SIZE).", pool.max_size)
        )
    scraped = CollectorRegistry()
    scraped.register(_Scraped(families))
    return prometheus_client.generate_latest(REGISTRY) + prometheus_client.generate_latest(scraped)
