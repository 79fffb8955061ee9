"""One definition per dispatch rule: the single-fire statement and the general planning path, run against the
same real database around the misfire grace boundary, decide alike (hypothesis draws the lateness)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
from hypothesis import HealthCheck, assume, given, settings, strategies

from service import admin
from service.domain import types
from service.store import database
from service.store.stores import Stores
from tests.integration.conftest import fetch

UTC = dt.timezone.utc
GRACE = dt.timedelta(seconds=60)
AHEAD = dt.timedelta(seconds=2)
RESERVATION = dt.timedelta(seconds=5)
PUSH = {"to": "all", "body": {"platform": "all", "notification": {"alert": "rule"}}}

# Lateness relative to the grace, in seconds: either side of the boundary, and early (planned ahead) too. Within
# 0.25 s of the boundary the database's clock moves between the two statements, so no verdict is owed there.
lateness = strategies.one_of(
    strategies.floats(min_value=-3.0, max_value=-0.25),
    strategies.floats(min_value=0.25, max_value=3.0),
).map(lambda seconds: GRACE.total_seconds() + seconds) | strategies.floats(min_value=-1.9, max_value=30.0)


async def _insert(connection: asyncpg.Connection, app_key: str, due: dt.datetime, kind: str) -> uuid.UUID:
    """A single zone_type 1 task due at `due`; kind 'single' is what the one-statement path selects, and the
    same task stored as kind 'single*' is left to the general path (lock_due_schedules takes every kind)."""
    schedule_id = uuid.uuid4()
    trigger = {"single": {"time": due.strftime("%Y-%m-%d %H:%M:%S"), "zone_type": 1}}
    await connection.execute(
        "INSERT INTO schedules (id, app_key, name, enabled, trigger, push, next_fire_at, final_fire_at, kind, zone_type, "
        "time_zone) "
        "VALUES ($1, $2, 'rule', true, $3, $4, $5, $5, $6, 1, 'UTC')",
        schedule_id, app_key, trigger, PUSH, due, kind,
    )
    return schedule_id


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(late=lateness)
async def test_both_planning_paths_apply_the_same_grace(database_url: str, late: float) -> None:
    stores = await Stores.open(database_url, api_pool_size=1, engine_pool_size=2)
    connection = await asyncpg.connect(database_url)
    await database.register_json_codecs(connection)
    try:
        app_key = (await admin.register_app(stores.schedules, "rules")).app.app_key
        queue = stores.runs
        assert queue is not None
        now = await connection.fetchval("SELECT clock_timestamp()")
        # Whole seconds on the wire, so a due instant is whole too: round the lateness into the instant.
        due = (now - dt.timedelta(seconds=late)).replace(microsecond=0)
        late = (now - due).total_seconds()
        assume(abs(late - GRACE.total_seconds()) > 0.25 and abs(late) > 0.25)
        single_id = await _insert(connection, app_key, due, "single")
        general_id = await _insert(connection, app_key, due, "single*")
        lease = types.PlanLease(dt.timedelta(seconds=60), 1000, uuid.uuid4())
        await queue.plan_single_fires(AHEAD, 1000, GRACE, RESERVATION, lease)
        await queue.plan_due(AHEAD, 1000, GRACE, RESERVATION, _single_fire_plan, lease)
        rows = await connection.fetch(
            "SELECT schedule_id, state FROM runs WHERE schedule_id = ANY($1::uuid[])", [single_id, general_id]
        )
        states = {row["schedule_id"]: row["state"] for row in rows}
        verdict = (late, states.get(single_id), states.get(general_id))
        assert states.get(single_id) == states.get(general_id), verdict
        # Too late: missed. Due already: leased at once (the plan had places for it). Ahead: planned.
        expected = "missed" if late > GRACE.total_seconds() else "sending" if late > 0 else "planned"
        assert states[single_id] == expected, verdict
    finally:
        await connection.close()
        await stores.close()


def _single_fire_plan(schedule, now, until):  # type: ignore[no-untyped-def]
    from service.domain import dispatch, timing

    return dispatch.plan_due(schedule.trigger, timing.load_zone(schedule.time_zone), (), schedule.next_fire_at,
                             now, until=until)


async def test_the_valid_set_has_one_definition(database_url: str) -> None:
    rows = await fetch(
        database_url,
        "SELECT schedule_is_valid('active', now() + interval '1 s', now()) AS future, "
        "schedule_is_valid('active', now(), now()) AS at_last_fire, "
        "schedule_is_valid('expired', now() + interval '1 s', now()) AS expired, "
        "schedule_is_valid('deleted', now() + interval '1 s', now()) AS deleted",
    )
    assert dict(rows[0]) == {"future": True, "at_last_fire": False, "expired": False, "deleted": False}
    # Every query of the valid set calls it; none spells the rule out again.
    from service.store.queries import SQL

    for name, statement in SQL.items():
        assert "final_fire_at >" not in statement, f"{name} spells out the valid set instead of schedule_is_valid"
