"""Configuration: one typed value read from the environment once, in main(); tests build it explicitly."""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, ValidatorFunctionWrapHandler, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.domain import timing


class Settings(BaseSettings):
    """Every variable is documented in the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str | None = Field(
        default=None, description="PostgreSQL DSN; unset starts the embedded server under DATA_DIR"
    )
    data_dir: pathlib.Path = Field(default=pathlib.Path(".data"), description="embedded database, demo credentials")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(
        default=1, ge=1, le=256, description="serving processes sharing the port (SO_REUSEPORT); auto: the cores given"
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_timeout_seconds: float = Field(default=5.0, gt=0, description="connect, acquire and statement timeout")
    default_max_schedules: int = Field(default=1000, ge=0, description="cap of valid tasks for new apps")
    wave_offsets: str = Field(
        default="", description="zone_type 2: comma-separated UTC offsets (+08:00,...) to fire; empty = all"
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object per line (production); text: plain lines (a terminal)"
    )

    # The dispatch engine.
    engine_enabled: bool = Field(default=True, description="run the dispatcher in this process")
    push_api_url: str | None = Field(
        default=None, description="push API base URL (POST {url}/v4/push); unset: the local sink backend"
    )
    push_credentials_key: str | None = Field(
        default=None, description="Fernet key encrypting the apps' push secrets at rest"
    )
    push_require_credentials: bool = Field(
        default=True,
        description="with PUSH_API_URL: a run of an app without push credentials fails at once (true), or is "
        "sent with no Authorization (false: one tenant, behind a gateway that authenticates the service)",
    )
    misfire_grace: float = Field(
        default=300, ge=0, description="seconds: a fire found late by at most this is sent, older is recorded missed"
    )
    send_concurrency: int = Field(default=200, ge=1, le=10_000)
    send_timeout_seconds: float = Field(default=10, gt=0)
    lease_seconds: float = Field(default=60, gt=0, description="a crashed sender's runs are resent after this")
    retry_base_seconds: float = Field(default=1, gt=0)
    retry_max_seconds: float = Field(default=300, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    engine_batch_size: int = Field(default=500, ge=1, le=10_000)
    engine_max_idle_seconds: float = Field(
        default=5, gt=0, description="longest engine sleep: the safety net under LISTEN/NOTIFY wake-ups"
    )
    engine_planners: int = Field(
        default=2, ge=1, le=16, description="plan transactions at once while a backlog lasts"
    )
    engine_plan_ahead_seconds: float = Field(
        default=2, ge=0, le=60, description="fires are planned this long before they are due; 0: when due"
    )
    engine_max_planned_ahead: int = Field(
        default=20_000, ge=0, description="most planned runs held in memory (at least ENGINE_BATCH_SIZE)"
    )
    retention_days: int = Field(
        default=90, ge=0, description="days terminal runs, and deleted or expired tasks, are kept; 0: forever"
    )
    retention_batch_size: int = Field(
        default=2000, ge=1, le=10_000, description="most runs one retention transaction purges"
    )
    # Run now, webhooks and the polling pattern (issue 13).
    run_poll_seconds: int = Field(
        default=2, ge=1, le=3600, description="Retry-After of a run's 202 answers: how long a poller waits"
    )
    hook_rate_per_minute: int = Field(
        default=60, ge=0, description="webhook calls per task per sliding minute, across replicas; 0: no limit"
    )
    public_base_url: str | None = Field(
        default=None,
        description="the service's public URL (https://push.example.com): Location headers and webhook URLs "
        "are absolute under it; unset: relative. Never taken from a request's Host header",
    )
    shutdown_timeout_seconds: float = Field(default=10, ge=0, description="SIGTERM: time to finish requests and sends")

    # Whether WORKERS was `auto`: the parent may then start fewer workers than cores, to fit the database's
    # connections (service.workers); a number given is refused instead when it does not fit.
    _workers_auto: bool = PrivateAttr(default=False)

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: object) -> object:
        return parse_workers(value) if isinstance(value, str) else value

    @model_validator(mode="wrap")
    @classmethod
    def _remember_auto_workers(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        settings = handler(data)
        given = data.get("workers") if isinstance(data, dict) else None
        settings._workers_auto = is_auto(given)  # noqa: SLF001 -- its own class, once validated
        return settings

    @property
    def workers_auto(self) -> bool:
        return self._workers_auto

    @field_validator("wave_offsets")
    @classmethod
    def _offsets_parse(cls, value: str) -> str:
        for part in filter(None, (piece.strip() for piece in value.split(","))):
            timing.parse_offset(part)
        return value

    @field_validator("public_base_url", "push_api_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host, refused at start-up rather than found wrong at the first push."""
        if value is None or value == "":
            return None
        http = value.startswith(("http://", "https://")) and bool(urlsplit(value).hostname)
        if not http or "?" in value or "#" in value:
            raise ValueError(f"must be an http(s) URL without query or fragment, got {value!r}")
        if not value.isascii():  # it goes into HTTP headers (Host, Location) as is
            raise ValueError(f"must be ASCII: a host in its punycode form (xn--...), a path %-encoded; got {value!r}")
        return value.rstrip("/")

    @property
    def wave_offset_minutes(self) -> tuple[int, ...]:
        parts = [piece.strip() for piece in self.wave_offsets.split(",") if piece.strip()]
        if not parts:
            return timing.REAL_UTC_OFFSETS_MINUTES
        return tuple(sorted({timing.parse_offset(part) for part in parts}))


def available_cores() -> int:
    """The cores this process may use: its CPU affinity (a cpuset), capped by a cgroup v2 CPU quota
    (`docker run --cpus 2`), which os.cpu_count() ignores: it counts the host's."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = pathlib.Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def is_auto(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


def parse_workers(value: object) -> int:
    """WORKERS and `serve --workers`: a number of processes, or `auto` for the cores given."""
    if is_auto(value):
        return available_cores()
    text = str(value).strip().lower()
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"workers: a number or 'auto', got {value!r}") from None
