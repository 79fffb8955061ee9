"""Planning ahead: fires are planned ENGINE_PLAN_AHEAD_SECONDS before they are due, held in memory, claimed
just before their instant. Changes inside that window must win, and nothing planned may be lost or doubled
when the planner stops or dies."""

from __future__ import annotations

import asyncio
import datetime as dt
import pathlib
import time
import uuid
from typing import Any

import aiohttp

from service.app import create_app
from tests.integration.conftest import (
    OPEN_RUN_STATES,
    Service,
    engine_settings,
    fetch,
    next_whole_second,
    schedule_body,
    start_service,
    wall_at,
)
from tests.standin import StandIn
from tests.waiting import eventually


async def _runs(database_url: str, schedule_id: str) -> list[Any]:
    return await fetch(
        database_url,
        "SELECT state, due_at, lease_until, attempts FROM runs WHERE schedule_id = $1 ORDER BY created_at",
        uuid.UUID(schedule_id),
    )


async def _planned(database_url: str, schedule_id: str, by: dt.datetime) -> list[Any]:
    """The task's runs once it has one planned, at the latest at `by` (else the test fails)."""

    async def runs_if_planned() -> list[Any]:
        runs = await _runs(database_url, schedule_id)
        return runs if [run["state"] for run in runs] == ["planned"] else []

    return await eventually(runs_if_planned, timeout=by.timestamp() - time.time(), what="the fire planned")


async def _settled(database_url: str, schedule_id: str) -> list[Any]:
    """The task's runs once one exists and every one has its outcome recorded."""

    async def runs_if_settled() -> list[Any]:
        runs = await _runs(database_url, schedule_id)
        return runs if runs and all(run["state"] not in OPEN_RUN_STATES for run in runs) else []

    return await eventually(runs_if_settled, what="the run's outcome recorded")


async def test_a_fire_is_planned_ahead_then_sent_at_its_instant(
    dispatching_service: Service, standin: StandIn, database_url: str
) -> None:
    api = await dispatching_service.new_app()
    due = next_whole_second(2.5)
    schedule_id = (await api.create(schedule_body(time=wall_at(due)))).json["schedule_id"]
    # Within the 2 s window, by a second before the instant: planned, reserved to this engine until 5 s after
    # the instant, never attempted.
    [run] = await _planned(database_url, schedule_id, by=due - dt.timedelta(seconds=1))
    assert (run["state"], run["due_at"], run["attempts"]) == ("planned", due, 0)
    assert run["lease_until"] == due + dt.timedelta(seconds=5)
    # Still valid, though every fire of it is planned.
    assert (await api.get(schedule_id)).status == 200
    [delivery] = await standin.wait_for(1, timeout=5)
    assert 0 <= delivery.received_at - due.timestamp() < 0.2
    [run] = await _settled(database_url, schedule_id)
    assert (run["state"], run["attempts"]) == ("sent", 1)


async def test_a_push_changed_after_planning_is_sent_as_changed(
    dispatching_service: Service, standin: StandIn, database_url: str
) -> None:
    api = await dispatching_service.new_app()
    due = next_whole_second(2.5)
    body = schedule_body(time=wall_at(due))
    schedule_id = (await api.create(body)).json["schedule_id"]
    assert [run["state"] for run in await _planned(database_url, schedule_id, by=due - dt.timedelta(seconds=1))] == ["planned"]
    push = body["push"]
    push["body"]["notification"]["alert"] = "changed after planning"
    assert (await api.update(schedule_id, {"push": push})).status == 200
    [delivery] = await standin.wait_for(1, timeout=5)
    assert delivery.body["body"]["notification"]["alert"] == "changed after planning"
    assert 0 <= delivery.received_at - due.timestamp() < 0.2
    await _settled(database_url, schedule_id)
    # Proves a negative, so a bounded wait: no second push (the one planned before the change) arrives.
    await asyncio.sleep(1.0)
    assert len(standin.deliveries) == 1
    # The run planned from the old push is gone; one run, sent.
    assert [run["state"] for run in await _runs(database_url, schedule_id)] == ["sent"]


async def test_disabled_and_enabled_again_after_planning_fires_once(
    dispatching_service: Service, standin: StandIn, database_url: str
) -> None:
    api = await dispatching_service.new_app()
    due = next_whole_second(2.5)
    schedule_id = (await api.create(schedule_body(time=wall_at(due)))).json["schedule_id"]
    await _planned(database_url, schedule_id, by=due - dt.timedelta(seconds=1))
    assert (await api.update(schedule_id, {"enabled": False})).status == 200
    assert (await api.update(schedule_id, {"enabled": True})).status == 200
    [delivery] = await standin.wait_for(1, timeout=5)
    assert 0 <= delivery.received_at - due.timestamp() < 0.2
    await _settled(database_url, schedule_id)
    # Proves a negative, so a bounded wait: no second push (the one planned before the disable) arrives.
    await asyncio.sleep(1.0)
    assert len(standin.deliveries) == 1


async def test_a_stopping_engine_hands_its_planned_runs_to_another(
    database_url: str, tmp_path: pathlib.Path, standin: StandIn, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    planner = await aiohttp_server(
        create_app(engine_settings(database_url, tmp_path / "a", standin.url, engine_plan_ahead_seconds=3))
    )
    api = await Service(planner.app, str(planner.make_url("")).rstrip("/"), session).new_app()
    due = next_whole_second(2.0)
    schedule_id = (await api.create(schedule_body(time=wall_at(due)))).json["schedule_id"]
    # Its instant is within the 3 s window already: planned at once (within half a second).
    planned_by = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.5)
    assert [run["state"] for run in await _planned(database_url, schedule_id, by=planned_by)] == ["planned"]
    await planner.close()  # SIGTERM's path: the engine stops and hands back what it planned
    [run] = await _runs(database_url, schedule_id)
    assert (run["state"], run["lease_until"]) == ("planned", due)  # any engine may take it at its instant
    await start_service(
        engine_settings(database_url, tmp_path / "b", standin.url, engine_plan_ahead_seconds=0), aiohttp_server, session
    )
    [delivery] = await standin.wait_for(1, timeout=5)
    assert 0 <= delivery.received_at - due.timestamp() < 0.5
    await _settled(database_url, schedule_id)
    # Proves a negative, so a bounded wait: the stopped planner's engine sends nothing more.
    await asyncio.sleep(0.5)
    assert len(standin.deliveries) == 1
    assert [run["state"] for run in await _runs(database_url, schedule_id)] == ["sent"]


async def test_a_planned_run_whose_planner_died_is_taken_over_after_its_reservation(
    dispatching_service: Service, standin: StandIn, database_url: str
) -> None:
    """A dead planner's run, as the database shows it: planned, reserved until shortly after its instant, its
    task advanced past it. Another engine sends it once the reservation has run out, with the run's key."""
    api = await dispatching_service.new_app()
    schedule_id = (await api.create(schedule_body())).json["schedule_id"]
    due = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=1)
    run_id = uuid.uuid4()
    await fetch(
        database_url,
        "WITH advanced AS (UPDATE schedules SET next_fire_at = NULL WHERE id = $1) "
        "INSERT INTO runs (id, schedule_id, due_at, state, lease_until) VALUES ($2, $1, $3, 'planned', $4)",
        uuid.UUID(schedule_id), run_id, due, due + dt.timedelta(seconds=1),
    )
    [delivery] = await standin.wait_for(1, timeout=8)
    assert delivery.cid == run_id.hex
    assert delivery.received_at >= (due + dt.timedelta(seconds=1)).timestamp()
    [run] = await _settled(database_url, schedule_id)
    assert (run["state"], run["attempts"]) == ("sent", 1)
