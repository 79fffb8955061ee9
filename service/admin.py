"""App registration, shared by the CLI (`apps create`) and the first start (the demo app)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib

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
    if (push_key is None) != (push_secret is None):
        raise ValueError("--push-key and --push-secret-file go together")
    encrypted = None
    if push_secret is not None:
        if not credentials_key:
            raise ValueError("storing push credentials needs PUSH_CREDENTIALS_KEY (a Fernet key) in the environment")
        encrypted = credentials.encrypt_push_secret(push_secret, credentials_key)
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


async def ensure_demo_app(store: schedules.ScheduleStore, data_dir: pathlib.Path, max_schedules: int) -> NewApp | None:
    """On an empty database, register a demo app and save its credentials (mode 0600) under DATA_DIR."""
    if await store.count_apps() > 0:
        return None
    created = await register_app(store, "demo", "UTC", max_schedules)
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 -- once, at start-up, before serving
    path = data_dir / DEMO_CREDENTIALS_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(created.to_json(), file, indent=2)
    return created
