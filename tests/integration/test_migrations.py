"""Migrations: applied once, safe to run concurrently, and an edited applied file refuses to start."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from service.store import migrations
from tests.conftest import _admin, with_database


@pytest.fixture
async def empty_database(postgres_server_dsn: str) -> AsyncIterator[str]:
    """A database nothing has migrated yet, named apart from every other worker's on a shared server."""
    name = f"t_empty_{uuid.uuid4().hex[:16]}"
    await _admin(postgres_server_dsn, f"CREATE DATABASE {name}")
    try:
        yield with_database(postgres_server_dsn, name)
    finally:
        await _admin(postgres_server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_concurrent_migrations_apply_each_file_once(empty_database: str) -> None:
    results = await asyncio.gather(*(migrations.migrate(empty_database) for _ in range(4)))
    expected = [migration.version for migration in migrations.discover()]
    assert sorted(results, key=len)[-1] == expected
    assert sum(len(applied) for applied in results) == len(expected)  # one winner, the others found it done
    assert await migrations.migrate(empty_database) == []
    connection = await asyncpg.connect(empty_database)
    try:
        assert await migrations.is_current(connection)
    finally:
        await connection.close()


async def test_edited_applied_migration_refuses(empty_database: str, tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(migrations.default_directory(), directory)
    await migrations.migrate(empty_database, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(migrations.MigrationError, match="was edited after it was applied"):
        await migrations.migrate(empty_database, directory)


async def test_unknown_applied_migration_refuses(empty_database: str, tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "sql"
    shutil.copytree(migrations.default_directory(), directory)
    (directory / "9999_future.sql").write_text("SELECT 1;")
    await migrations.migrate(empty_database, directory)
    (directory / "9999_future.sql").unlink()
    with pytest.raises(migrations.MigrationError, match="no file in sql/ describes"):
        await migrations.migrate(empty_database, directory)
