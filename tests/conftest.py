"""One fixture owns the test database server: DATABASE_URL when set, TEST_POSTGRES=container for
testcontainers (skipped where no Docker engine answers), else an embedded PostgreSQL for the session.

Every test that needs a database gets its own, created from a migrated template and dropped afterwards.

Under pytest-xdist every worker is a session of its own: it starts its own embedded PostgreSQL (or
container) in its own temporary directory, and on a shared DATABASE_URL server it migrates a template of its
own name, since `CREATE DATABASE ... TEMPLATE` fails while another session is connected to the template.
Tests are handed out one at a time, except those under a directory of SAME_WORKER (see the scheduler below).
"""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from service.store import migrations

# "gw0", "gw1", ... under pytest-xdist; "main" when the tests run in one process.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
TEMPLATE = f"push_test_template_{WORKER}"


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at database `name` (works for host:port and ?host=/socket forms)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN of a server on which tests may create and drop databases."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    if os.environ.get("TEST_POSTGRES") == "container":
        yield from _container_server()
        return
    from service.store.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"))
    dsn = server.start()
    # Test data is disposable: trade durability for speed on this server only.
    asyncio.run(
        _admin(
            dsn,
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET synchronous_commit = off",
            "ALTER SYSTEM SET full_page_writes = off",
            "SELECT pg_reload_conf()",
        )
    )
    try:
        yield dsn
    finally:
        server.stop()


def _docker_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    import docker

    # A failed probe leaves the client's socket for the garbage collector; its ResourceWarning is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env()
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 -- no engine, no socket, no permission: all mean "cannot run here"
            return repr(exc)
        finally:
            gc.collect()
    return None


def _container_server() -> Iterator[str]:
    problem = _docker_problem()
    if problem is not None:
        pytest.skip(f"TEST_POSTGRES=container needs a Docker engine, none answers here: {problem}")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def template_dsn(postgres_server_dsn: str) -> str:
    """A database migrated once per session, the template of every test database."""
    asyncio.run(
        _admin(
            postgres_server_dsn,
            f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)",
            f"CREATE DATABASE {TEMPLATE}",
        )
    )
    dsn = with_database(postgres_server_dsn, TEMPLATE)
    asyncio.run(migrations.migrate(dsn))
    return dsn


@pytest.fixture
def database_url(postgres_server_dsn: str, template_dsn: str) -> Iterator[str]:
    """A fresh migrated database for one test, dropped after it."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin(postgres_server_dsn, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
    try:
        yield with_database(postgres_server_dsn, name)
    finally:
        asyncio.run(_admin(postgres_server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[1]


# Under pytest-xdist, the tests under these directories all run on one worker: tests/contract's session
# fixture starts one `python -m service` process for both its tests, so they should not start one each.
# tests/faults: its session fixture runs every scenario its collected tests ask for, once per worker that
# runs any of them, so they too go together (three workers ran the whole fault suite three times).
SAME_WORKER = ("tests/contract/", "tests/faults/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist load` (what `-n` does by default), but SAME_WORKER directories go to one worker together.

    Not xdist_group marks with `--dist loadgroup`: on pytest 9.2 that grouping silently stops
    (pytest-xdist issue #1386), and the controller, which schedules, sees only node ids, no marks.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class KeepTogether(LoadScopeScheduling):
        # Units are handed out largest first (--loadscope-reorder, on by default), so the contract tests,
        # the longest, start at once, and the single tests follow in the order they were collected.
        def _split_scope(self, nodeid: str) -> str:
            return next((directory for directory in SAME_WORKER if nodeid.startswith(directory)), nodeid)

    return KeepTogether(config, log)


# Measurements a test wants shown at the end of the run (case counts, timings), beside pytest's summary.
# A test records one with `record_property(MEASURED, line)`: the property travels with the test's report, so
# it reaches the process that prints the summary also when the test ran in a pytest-xdist worker.
MEASURED = "measured"
SUMMARY: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        SUMMARY.extend(str(value) for name, value in report.user_properties if name == MEASURED)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.write_sep("-", "measured")
        for line in SUMMARY:
            terminalreporter.write_line(line)
