"""Prometheus metrics: every metric the service exports is defined here, once per process.

The API records requests, the engine records dispatch outcomes and lateness; neither needs the other, and
the engine records without touching aiohttp's server side. Values that are read, not counted (the due
backlog, the pool), are gathered at scrape time into a registry of their own, so a value that could not be
read is simply absent from that scrape instead of stale.

Labels are bounded: routes are route templates (`/v4/schedules/{schedule_id}`, never an id), unknown paths
share one label, and no label ever carries app data.
"""

from __future__ import annotations

import functools
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.domain import types

# The classic text format (0.0.4): every Prometheus-compatible scraper reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The route label of a request no route matched (404, 405 on an unknown path).
UNMATCHED_ROUTE = "unmatched"

# No `*_created` series: they double the output and no dashboard of ours reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library
REGISTRY = CollectorRegistry(auto_describe=True)
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


def exposition(backlog: types.DueBacklog | None, pool: types.PoolUsage | None) -> bytes:
    """The text of one scrape: the process's counters plus the values read for this scrape, when known."""
    scraped = CollectorRegistry()
    if backlog is not None:
        due = Gauge(
            "push_due_backlog",
            "Work due now and not yet done, by kind (read at scrape time).",
            ["kind"],
            registry=scraped,
        )
        due.labels("fires").set(backlog.fires)
        due.labels("retries").set(backlog.retries)
        due.labels("expired_leases").set(backlog.expired_leases)
    if pool is not None:
        connections = Gauge(
            "push_db_pool_connections",
            "This process's database pool connections, by state.",
            ["state"],
            registry=scraped,
        )
        connections.labels("in_use").set(pool.size - pool.idle)
        connections.labels("idle").set(pool.idle)
        Gauge("push_db_pool_max_connections", "The pool's maximum size (DB_POOL_SIZE).", registry=scraped).set(
            pool.max_size
        )
    return prometheus_client.generate_latest(REGISTRY) + prometheus_client.generate_latest(scraped)
