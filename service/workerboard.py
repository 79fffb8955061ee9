"""The readiness board of `serve --workers N`: one small file per worker in a directory the parent made, so
any worker answering /readyz can say whether every worker is ready.

The parent writes a worker's entry before it starts the process ("starting") and after it died ("down: ...");
the worker overwrites it as its own readiness changes ("ready", "draining", "engine loop down: ..."). Each
write replaces the file at once (a rename), so a reader never sees half an entry. The database is not on the
board: every worker asks it itself, and they all share it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import threading

log = logging.getLogger(__name__)

READY = "ready"


class Board:
    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        # A worker posts from a thread (its readiness loop) and from its loop's thread (draining): one staging
        # file per process, so one post at a time, or one post's rename takes the other's file from under it.
        self._posting = threading.Lock()

    def _path(self, worker: int) -> pathlib.Path:
        return self.directory / f"worker-{worker}.json"

    def post(self, worker: int, pid: int | None, status: str) -> bool:
        """Set `worker`'s entry; a reader sees the old or the new one, never a mix. False, logged, when it cannot
        be written (a full disk): the board is advisory, and a post failing must neither stop the parent
        supervising nor kill a worker that serves or cut its stop short. The entry then stays as it was, so
        /readyz may be wrong about that worker until a post works."""
        staging = self.directory / f".worker-{worker}.{os.getpid()}.tmp"
        try:
            with self._posting:
                staging.write_text(json.dumps({"worker": worker, "pid": pid, "status": status}), encoding="utf-8")
                staging.replace(self._path(worker))
        except OSError as exc:
            log.warning("the readiness board: worker %d %s not posted: %s", worker, status, exc,
                        extra={"event": "board_not_posted", "worker": worker})  # fmt: skip
            return False
        return True

    def status(self, worker: int) -> str | None:
        """`worker`'s status as last posted; None before any."""
        try:
            return str(json.loads(self._path(worker).read_text(encoding="utf-8"))["status"])
        except (OSError, ValueError, KeyError):
            return None

    def entries(self) -> list[dict[str, object]]:
        """Every worker's entry, by worker number."""
        found = []
        for path in self.directory.glob("worker-*.json"):
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):  # replaced or removed between the listing and the read
                continue
        return sorted(found, key=lambda entry: int(str(entry["worker"])))

    def first_not_ready(self, besides: int | None = None) -> str | None:
        """Why the service is not ready ("worker 1 (pid 4242): starting"), or None when every worker (but
        `besides`, which answers for itself) is."""
        for entry in self.entries():
            if entry["worker"] != besides and entry["status"] != READY:
                pid = "" if entry["pid"] is None else f" (pid {entry['pid']})"
                return f"worker {entry['worker']}{pid}: {entry['status']}"
        return None


@dataclasses.dataclass(frozen=True)
class Seat:
    """A worker's place: its number (0..N-1, kept across its restarts) and the board it posts to."""

    index: int
    board: Board
