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
# What made a run: its task's trigger, or a caller (run now, a webhook: issue 13).
RunSource = Literal["schedule", "run_now", "webhook"]
TriggerSource = Literal["run_now", "webhook"]
# The orders a list offers (`sort=`, with `-` for descending) and the trigger kinds it filters by (`kind=`).
SortKey = Literal["created", "name", "next_run", "last_run"]
TRIGGER_KINDS = ("single", "periodical", "cron", "interval")
# Above every name byte-wise (a name holds letters, digits, "_" and spaces): the open end of a name range.
NAME_ABOVE_ALL = "\U0010ffff"


def wire_instant(instant: dt.datetime | None) -> str | None:
    """An instant as the extensions show it: RFC 3339 in UTC, `2027-06-01T09:00:00Z`, with milliseconds when
    it has a fraction of a second."""
    if instant is None:
        return None
    utc = instant.astimezone(dt.timezone.utc)
    return utc.isoformat(timespec="milliseconds" if utc.microsecond else "seconds").replace("+00:00", "Z")


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
    # Extensions (issue 12): shown after the v4 keys, which keep their names, types and meaning.
    description: str = ""
    max_failures: int = 0
    consecutive_failures: int = 0
    disabled_reason: str | None = None  # why the engine disabled it (max_failures reached)
    next_run_at: dt.datetime | None = None  # sql/0008 schedule_next_run_at
    last_run: LastRun | None = None
    params: dict[str, str] = dataclasses.field(default_factory=dict)  # issue 13: names and defaults
    webhook_created_at: dt.datetime | None = None  # when its webhook token was made; None: it has none

    def to_wire(self) -> dict[str, Any]:
        return {
            "schedule_id": str(self.schedule_id),
            "name": self.name,
            "enabled": self.enabled,
            "trigger": self.trigger,
            "push": self.push,
            "description": self.description,
            "max_failures": self.max_failures,
            "consecutive_failures": self.consecutive_failures,
            "disabled_reason": self.disabled_reason,
            "next_run_at": wire_instant(self.next_run_at),
            "last_run": None if self.last_run is None else self.last_run.to_wire(),
            "params": self.params,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class LastRun:
    """A task's latest run whose send finished, by due instant."""

    due_at: dt.datetime
    outcome: Literal["sent", "failed"]
    msg_id: str | None

    def to_wire(self) -> dict[str, Any]:
        return {"due_at": wire_instant(self.due_at), "outcome": self.outcome, "msg_id": self.msg_id}


@dataclasses.dataclass(frozen=True, slots=True)
class ListQuery:
    """What a list asks for: one order and the filters (None: not filtered). Names are filtered as a byte-wise
    range [name_from, name_below), which name= and name_prefix= both become."""

    sort: SortKey = "created"
    descending: bool = False
    name: str | None = None
    name_from: str = ""
    name_below: str = NAME_ABOVE_ALL
    enabled: bool | None = None
    kind: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """One run of a task, as its history shows it."""

    run_id: uuid.UUID
    due_at: dt.datetime
    wave: str | None  # the wave's UTC offset (`+08:00`) for zone_type 2, None for zone_type 1
    state: RunState
    attempts: int
    dispatched_at: dt.datetime | None
    msg_id: str | None
    error: str | None
    source: RunSource = "schedule"
    triggered_run_id: uuid.UUID | None = None  # the triggered run this push belongs to (issue 13)
    param_set: int | None = None  # its parameter set in that run, 0-based

    def to_wire(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "due_at": wire_instant(self.due_at),
            "wave": self.wave,
            "state": self.state,
            "attempts": self.attempts,
            "dispatched_at": wire_instant(self.dispatched_at),
            "msg_id": self.msg_id,
            "error": self.error,
            "source": self.source,
            "triggered_run_id": None if self.triggered_run_id is None else str(self.triggered_run_id),
            "param_set": self.param_set,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class RunProgress:
    """Where a run stands (a triggered run's pushes, or one scheduled run), as its status URL answers it: in
    progress while any push is queued, being sent or waiting for a retry; else ended, for good."""

    run_id: uuid.UUID
    schedule_id: ScheduleId
    source: RunSource
    total: int
    sent: int
    failed: int  # ended without being sent: refused, retries used up, missed, cancelled
    next_attempt_at: dt.datetime | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    msg_ids: list[str]
    errors: list[tuple[int, str]]  # (parameter set, error) of the pushes that ended unsent

    @property
    def ended(self) -> bool:
        return self.sent + self.failed >= self.total

    @property
    def status(self) -> str:
        if not self.ended:
            return "in progress"
        if self.failed == 0:
            return "succeeded"
        return "failed" if self.sent == 0 else "partial"

    def to_wire(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "run_id": str(self.run_id),
            "schedule_id": str(self.schedule_id),
            "source": self.source,
            "status": self.status,
        }
        if not self.ended:
            return answer | {
                "percent": (self.sent + self.failed) * 100 // self.total,
                "total": self.total,
                "sent": self.sent,
                "failed": self.failed,
                "next_attempt_at": wire_instant(self.next_attempt_at),
            }
        return answer | {
            "total": self.total,
            "sent": self.sent,
            "failed": self.failed,
            "msg_ids": self.msg_ids,
            "errors": [{"index": index, "error": error} for index, error in self.errors],
            "started_at": wire_instant(self.started_at),
            "finished_at": wire_instant(self.finished_at),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Triggered:
    """What triggering a run did: made it ('created'), found the one made under the same Idempotency-Key
    ('existing'), or was refused by the webhook rate ('limited', with the seconds until a call may go)."""

    outcome: Literal["created", "existing", "limited"]
    run_id: uuid.UUID | None
    retry_after: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class HookTarget:
    """The task a webhook token opens, with what deciding on the call needs."""

    schedule_id: ScheduleId
    app_key: AppKey
    enabled: bool
    valid: bool
    app_active: bool
    push: dict[str, Any]
    params: dict[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class DisabledByFailures:
    """A task the engine disabled because it reached its max_failures."""

    schedule_id: ScheduleId
    app_key: AppKey
    consecutive_failures: int
    max_failures: int
    error: str | None


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
    description: str = ""
    max_failures: int = 0
    enabled_set: bool = False  # the request set `enabled`: clears the engine's disabled_reason (true: and the count)
    params: dict[str, str] | None = None  # names and defaults the push uses; None: none


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
    params: dict[str, str] | None = None


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
    # The values its push is sent with (service.domain.params.effective); None: the push goes as stored.
    params: dict[str, str] | None = None

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
