"""Small value types shared by every layer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, Literal, NewType

ScheduleId = NewType("ScheduleId", uuid.UUID)
AppKey = NewType("AppKey", str)

ZoneType = Literal[1, 2]
ScheduleState = Literal["active", "expired", "deleted"]
AppState = Literal["active", "disabled", "deleted"]
RunState = Literal["planned", "pending", "sending", "sent", "failed", "skipped", "missed", "cancelled"]


@dataclasses.dataclass(frozen=True, slots=True)
class App:
    """A registered app: the tenant every schedule belongs to."""

    app_key: AppKey
    name: str
    time_zone: str
    max_schedules: int
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class AppRecord:
    """An app as the operator's CLI shows it: never its secrets, only whether it has push credentials."""

    app: App
    state: AppState
    has_push_credentials: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "app_key": self.app.app_key,
            "name": self.app.name,
            "state": self.state,
            "time_zone": self.app.time_zone,
            "max_schedules": self.app.max_schedules,
            "has_push_credentials": self.has_push_credentials,
            "created_at": self.app.created_at.isoformat(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Fire:
    """One planned push: its due instant (UTC) and, for zone_type 2, the UTC offset of its wave in minutes."""

    due_at: dt.datetime
    utc_offset_minutes: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class FirePlan:
    """A trigger seen from `now`: its next fire, its last one (validity ends there), and the zone_type 2
    waves already past when it was created or changed (recorded as skipped, never sent)."""

    next_fire_at: dt.datetime
    final_fire_at: dt.datetime
    skipped: tuple[Fire, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule as the API shows it, plus the bookkeeping the API rules need."""

    schedule_id: ScheduleId
    app_key: AppKey
    name: str
    enabled: bool
    trigger: dict[str, Any]
    push: dict[str, Any]
    created_at: dt.datetime
    final_fire_at: dt.datetime
    time_zone: str  # the zone its zone_type 1 wall-clock times were read in (the app's, when last planned)

    def to_wire(self) -> dict[str, Any]:
        return {
            "schedule_id": str(self.schedule_id),
            "name": self.name,
            "enabled": self.enabled,
            "trigger": self.trigger,
            "push": self.push,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleValues:
    """What a create or update writes: the wire fields, normalized, and the fire plan derived from them."""

    name: str
    enabled: bool
    trigger: dict[str, Any]
    push: dict[str, Any]
    plan: FirePlan | None  # None on an update that leaves the trigger as it was
    kind: str  # the trigger's kind and zone type, stored as columns for the engine's SQL
    zone_type: int
    time_zone: str  # the zone `plan` was computed in, kept with the task


@dataclasses.dataclass(frozen=True, slots=True)
class DueSchedule:
    """A task whose next fire has come, as the planner sees it (locked until the plan commits)."""

    schedule_id: ScheduleId
    app_key: AppKey
    trigger: dict[str, Any]
    push: dict[str, Any]
    zone_type: int
    next_fire_at: dt.datetime
    time_zone: str
    push_key: str | None
    push_secret_encrypted: bytes | None


@dataclasses.dataclass(frozen=True, slots=True)
class RunToSend:
    """A run leased to this sender: one push to hand to the backend."""

    run_id: uuid.UUID  # also the idempotency key: the same on every resend of this run
    schedule_id: ScheduleId
    app_key: AppKey
    due_at: dt.datetime
    utc_offset_minutes: int | None  # the wave's offset for zone_type 2, None for zone_type 1
    attempts: int  # including the one about to be made
    push: dict[str, Any]
    push_key: str | None
    push_secret_encrypted: bytes | None
    still_wanted: bool = True  # False when the task was deleted or disabled after the run was leased

    @property
    def idempotency_key(self) -> str:
        return self.run_id.hex


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """What recording a send writes back to the run."""

    run_id: uuid.UUID
    attempts: int  # the attempt this is the outcome of: the write is fenced on it
    state: RunState
    finished_at: dt.datetime
    msg_id: str | None = None
    error: str | None = None
    next_attempt_at: dt.datetime | None = None
    payload: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SettledRun:
    """A run the engine settled without sending it ('missed': found later than the grace; 'failed': its lease
    ran out on its last attempt), with the reason kept on the run; the engine logs each one."""

    run_id: uuid.UUID
    schedule_id: ScheduleId
    due_at: dt.datetime
    state: RunState
    error: str


@dataclasses.dataclass(frozen=True, slots=True)
class PlanLease:
    """How a plan may lease the runs it finds due already: at most `count` of them (the places its sender has
    free), for `duration`, under claim `token` (to find them again should the plan's answer be lost)."""

    duration: dt.timedelta
    count: int
    token: uuid.UUID


@dataclasses.dataclass(frozen=True, slots=True)
class Planned:
    """What one plan transaction committed: how many tasks it planned, the runs now reserved to the caller
    ('planned', to be claimed at their instant), the runs due already and leased to it at once ('sending', on
    places its sender reserved), the runs recorded missed, and the database's instant."""

    tasks: int
    runs: list[RunToSend]
    missed: list[SettledRun]
    now: dt.datetime | None
    leased: list[RunToSend] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class DueBacklog:
    """Work due now and not done (for /metrics): fires not yet planned, retries due, sends whose lease ran out."""

    fires: int
    retries: int
    expired_leases: int


@dataclasses.dataclass(frozen=True, slots=True)
class PoolUsage:
    """One process's database pool (for /metrics)."""

    size: int  # connections open
    idle: int  # of which idle
    max_size: int
