"""Apps for operators: registration (the CLI's `apps create` and the first start's demo app) and the rest of
an app's life (disable, enable, delete, rotate-secret, update), each returning what the CLI prints as JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import pathlib
from typing import NoReturn

from service.domain import credentials, timing, types
from service.store import schedules

log = logging.getLogger(__name__)

DEMO_CREDENTIALS_FILE = "demo-app.json"


@dataclasses.dataclass(frozen=True)
class NewApp:
    app: types.App
    master_secret: str  # shown once, never stored

    def to_json(self) -> dict[str, object]:
        return {
            "app_key": self.app.app_key,
            "master_secret": self.master_secret,
            "time_zone": self.app.time_zone,
            "max_schedules": self.app.max_schedules,
        }


async def register_app(
    store: schedules.ScheduleStore,
    name: str,
    time_zone: str = "UTC",
    max_schedules: int = 1000,
    *,
    push_key: str | None = None,
    push_secret: str | None = None,
    credentials_key: str | None = None,
) -> NewApp:
    """Create an app with fresh credentials, and optionally the credentials it pushes with.

    ValueError for an unknown zone, a negative cap, half a push credential pair, or push credentials
    without PUSH_CREDENTIALS_KEY (the push secret is only ever stored encrypted).
    """
    timing.load_zone(time_zone)
    if max_schedules < 0:
        raise ValueError("max_schedules must be 0 or more")
    encrypted = _encrypted_push_secret(push_key, push_secret, credentials_key)
    master_secret = credentials.new_master_secret()
    app = await store.create_app(
        credentials.new_app_key(),
        name,
        credentials.digest(master_secret),
        time_zone,
        max_schedules,
        push_key,
        encrypted,
    )
    return NewApp(app, master_secret)


def _encrypted_push_secret(push_key: str | None, push_secret: str | None, credentials_key: str | None) -> bytes | None:
    """The push secret encrypted with PUSH_CREDENTIALS_KEY (it is never stored in clear), or None if not given."""
    if (push_key is None) != (push_secret is None):
        raise ValueError("--push-key and --push-secret-file go together")
    if push_secret is None:
        return None
    if not credentials_key:
        raise ValueError("storing push credentials needs PUSH_CREDENTIALS_KEY (a Fernet key) in the environment")
    return credentials.encrypt_push_secret(push_secret, credentials_key)


async def ensure_demo_app(store: schedules.ScheduleStore, data_dir: pathlib.Path, max_schedules: int) -> NewApp | None:
    """On an empty database, register a demo app and save its credentials (mode 0600) under DATA_DIR; None
    when the database has an app already (of two processes starting together, one creates it)."""
    master_secret = credentials.new_master_secret()
    app = await store.create_first_app(
        credentials.new_app_key(), "demo", credentials.digest(master_secret), "UTC", max_schedules
    )
    if app is None:
        return None
    created = NewApp(app, master_secret)
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 -- once, at start-up, before serving
    path = data_dir / DEMO_CREDENTIALS_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(created.to_json(), file, indent=2)
    return created


class UnknownApp(ValueError):
    def __init__(self, app_key: str) -> None:
        super().__init__(f"no app {app_key!r}")


async def _record(store: schedules.ScheduleStore, app_key: str) -> types.AppRecord:
    record = await store.get_app_record(app_key)
    if record is None:
        raise UnknownApp(app_key)
    return record


async def _refuse_update(store: schedules.ScheduleStore, app_key: str) -> NoReturn:
    """Why sql/0006 update_app changed nothing: no such app (UnknownApp), or a deleted one."""
    await _record(store, app_key)
    raise ValueError(f"app {app_key!r} is deleted")


async def set_app_state(
    store: schedules.ScheduleStore,
    app_key: str,
    state: types.AppState,
    now: dt.datetime,
    in_flight_wait: float = 0.0,
) -> dict[str, object]:
    """Disable, enable or delete an app (sql/0006 set_app_state): its record after, and its state before. A
    disable or delete waits up to `in_flight_wait` seconds for the app's sends already in flight."""
    before = await store.set_app_state(app_key, state, now, in_flight_wait)
    if before is None:
        raise UnknownApp(app_key)
    return {**(await _record(store, app_key)).to_json(), "previous_state": before}


async def rotate_secret(store: schedules.ScheduleStore, app_key: str) -> dict[str, object]:
    """A new master secret, returned once; the old one stops opening the API on every process at once."""
    master_secret = credentials.new_master_secret()
    if not await store.update_app(app_key, secret_sha256=credentials.digest(master_secret)):
        await _refuse_update(store, app_key)
    return {"app_key": app_key, "master_secret": master_secret}


async def update_app(
    store: schedules.ScheduleStore,
    app_key: str,
    *,
    time_zone: str | None = None,
    max_schedules: int | None = None,
    push_key: str | None = None,
    push_secret: str | None = None,
    credentials_key: str | None = None,
) -> dict[str, object]:
    """Change an app's zone, cap or push credentials; its record after. Stored tasks keep the zone they were
    planned in; a lower cap deletes nothing (creates are refused until the app is below it)."""
    if time_zone is None and max_schedules is None and push_key is None and push_secret is None:
        raise ValueError("nothing to update: give --time-zone, --max-schedules or --push-key with --push-secret-file")
    if time_zone is not None:
        timing.load_zone(time_zone)
    if max_schedules is not None and max_schedules < 0:
        raise ValueError("max_schedules must be 0 or more")
    encrypted = _encrypted_push_secret(push_key, push_secret, credentials_key)
    if not await store.update_app(
        app_key, time_zone=time_zone, max_schedules=max_schedules, push_key=push_key, push_secret_encrypted=encrypted
    ):
        await _refuse_update(store, app_key)
    return (await _record(store, app_key)).to_json()
