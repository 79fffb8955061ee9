"""Numbered plain-SQL migrations (`sql/NNNN_what.sql`), applied once each, in order, under an advisory lock.

Each applied file is recorded with its SHA-256; a file edited after it was applied refuses to start the
service, because the database would no longer match the history in the repository.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import re

import asyncpg

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every replica.
_MIGRATION_LOCK_KEY = 7_401_334_212
_FILE_NAME = re.compile(r"(\d{4})_(\w+)\.sql")


def default_directory() -> pathlib.Path:
    """`SQL_DIR` when set (an installed package, a container), else the repository's `sql/`."""
    configured = os.environ.get("SQL_DIR")
    if configured:
        return pathlib.Path(configured)
    return pathlib.Path(__file__).resolve().parents[2] / "sql"


class MigrationError(RuntimeError):
    """The database's migration history does not match the files."""


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def discover(directory: pathlib.Path | None = None) -> list[Migration]:
    directory = directory or default_directory()
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_what.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number in {directory}")
    return migrations


async def migrate(dsn: str, directory: pathlib.Path | None = None) -> list[int]:
    """Apply the pending migrations on one dedicated connection; returns the versions applied now."""
    migrations = discover(directory)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            return await _apply_pending(connection, migrations)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    finally:
        await connection.close()


async def _apply_pending(connection: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    await connection.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    applied = {
        row["version"]: row["checksum"]
        for row in await connection.fetch("SELECT version, checksum FROM schema_migrations")
    }
    known = {migration.version for migration in migrations}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise MigrationError(f"the database has migrations {unknown} that no file in sql/ describes")
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"sql/{migration.version:04d}_{migration.name}.sql was edited after it was applied; "
                    "add a new migration instead"
                )
            continue
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("applied migration %04d_%s", migration.version, migration.name)
        done.append(migration.version)
    return done


async def is_current(connection: asyncpg.Connection, directory: pathlib.Path | None = None) -> bool:
    """True when every migration file is applied (for /readyz)."""
    expected = {migration.version for migration in discover(directory)}
    try:
        rows = await connection.fetch("SELECT version FROM schema_migrations")
    except asyncpg.exceptions.UndefinedTableError:
        return False
    return expected <= {row["version"] for row in rows}
