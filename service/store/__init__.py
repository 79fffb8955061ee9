"""Persistence: every SQL statement, the asyncpg pool, migrations and the embedded PostgreSQL server."""
