"""A client generated from openapi.yaml by openapi-python-client (in a temporary directory, never committed)
does the whole life of a schedule against the real service process: what a third party gets from the spec.
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.contract.conftest import RunningService, tool, tool_env
from tests.integration.conftest import future_time, schedule_body
from tests.integration.test_cli_and_serve import ROOT, cli_env, run_cli

PACKAGE = "push_schedule_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Generate the client package, import it, and forget it afterwards."""
    where = tmp_path_factory.mktemp("generated-client")
    config = where / "config.yaml"
    config.write_text("post_hooks: []\n", encoding="utf-8")  # no formatter run: the code only has to work
    result = subprocess.run(
        [
            tool("openapi-python-client"), "generate",
            "--path", str(ROOT / "openapi.yaml"),
            "--output-path", str(where / PACKAGE),
            "--meta", "none",
            "--config", str(config),
            "--fail-on-warning",  # a spec feature the generator cannot express fails here
        ],
        env=tool_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def client_for(generated: Any, running_service: RunningService, app_key: str, secret: str) -> Any:
    token = base64.b64encode(f"{app_key}:{secret}".encode()).decode()
    # The scheme is http basic: the generated AuthenticatedClient takes the credentials as its token.
    return generated.AuthenticatedClient(
        base_url=running_service.base_url, token=token, prefix="Basic", raise_on_unexpected_status=True
    )


@pytest.fixture
def app_credentials(running_service: RunningService) -> tuple[str, str]:
    """A fresh app of the running service, registered through the CLI as an operator would."""
    created = run_cli("apps", "create", "--name", "generated_client", env=cli_env(DATABASE_URL=running_service.database_url))
    assert created.returncode == 0, created.stderr
    values = json.loads(created.stdout)
    return values["app_key"], values["master_secret"]


def test_generated_client_does_the_whole_life_of_a_schedule(
    generated: Any, running_service: RunningService, app_credentials: tuple[str, str]
) -> None:
    models = module("models")
    create_schedule = module("api.schedules.create_schedule")
    get_schedule = module("api.schedules.get_schedule")
    list_schedules = module("api.schedules.list_schedules")
    get_msg_ids = module("api.schedules.get_schedule_msg_ids")
    update_schedule = module("api.schedules.update_schedule")
    delete_schedule = module("api.schedules.delete_schedule")
    get_runs = module("api.schedules.get_schedule_runs")
    readyz = module("api.operations.readyz")

    with client_for(generated, running_service, *app_credentials) as client:
        assert readyz.sync(client=client).status.value == "ready"

        body = schedule_body(time=future_time(3600), description="made by the generated client", max_failures=3)
        created = create_schedule.sync(client=client, body=models.ScheduleCreate.from_dict(body))
        assert isinstance(created, models.CreateResult) and created.name == body["name"]
        schedule_id = str(created.schedule_id)

        fetched = get_schedule.sync(schedule_id=schedule_id, client=client)
        assert isinstance(fetched, models.Schedule)
        answered = fetched.to_dict()
        extensions = {
            key: answered.pop(key) for key in ("consecutive_failures", "disabled_reason", "next_run_at", "last_run", "params")
        }
        assert answered == {"schedule_id": schedule_id, **body}  # unknown push fields survive too
        assert (extensions["consecutive_failures"], extensions["disabled_reason"], extensions["last_run"]) == (0, None, None)
        assert extensions["params"] == {}
        # Parsed as a date-time by the client, written back in Python's form.
        assert extensions["next_run_at"] == body["trigger"]["single"]["time"].replace(" ", "T") + "+00:00"

        page = list_schedules.sync(client=client, page=1, sort=models.ListSchedulesSort("next_run"), enabled=True)
        assert isinstance(page, models.ScheduleList)
        assert (page.total_count, page.total_pages, page.page) == (1, 1, 1)
        assert str(page.schedules[0].schedule_id) == schedule_id

        runs = get_runs.sync(schedule_id=schedule_id, client=client, page=1)
        assert isinstance(runs, models.RunList) and (runs.total_count, runs.runs) == (0, [])

        msg_ids = get_msg_ids.sync(schedule_id=schedule_id, client=client)
        assert isinstance(msg_ids, models.MsgIds) and (msg_ids.count, msg_ids.msgids, msg_ids.msg_ids) == (0, [], [])

        later = future_time(7200)
        change = models.ScheduleUpdate(
            name="renamed_by_client",
            trigger=models.Trigger(single=models.SingleTrigger(time=later, zone_type=models.ZoneType.VALUE_1)),
        )
        updated = update_schedule.sync(schedule_id=schedule_id, client=client, body=change)
        assert isinstance(updated, models.Schedule)
        assert (updated.name, updated.trigger.single.time, updated.enabled) == ("renamed_by_client", later, True)

        deleted = delete_schedule.sync_detailed(schedule_id=schedule_id, client=client)
        assert (deleted.status_code, deleted.content) == (200, b"")
        gone = get_schedule.sync(schedule_id=schedule_id, client=client)
        assert isinstance(gone, models.Error) and gone.error.code.value == 28104

    # Wrong credentials come back as the documented 401 Error, parsed by the generated model.
    with client_for(generated, running_service, app_credentials[0], "wrong") as client:
        refused = list_schedules.sync(client=client)
        assert isinstance(refused, models.Error) and refused.error.code.value == 28101


def test_generated_client_drives_cron_and_interval_tasks(
    generated: Any, running_service: RunningService, app_credentials: tuple[str, str]
) -> None:
    """The extensions through the generated client: a cron and an interval trigger built from its models,
    their next fires previewed before saving and listed after (upcoming), a field-naming 28100 parsed."""
    models = module("models")
    create_schedule = module("api.schedules.create_schedule")
    get_schedule = module("api.schedules.get_schedule")
    update_schedule = module("api.schedules.update_schedule")
    preview_trigger = module("api.schedules.preview_trigger")
    get_upcoming = module("api.schedules.get_schedule_upcoming")

    with client_for(generated, running_service, *app_credentials) as client:
        cron = models.Trigger(cron=models.CronTrigger(expression="*/5 * * * *", zone_type=models.ZoneType.VALUE_2))
        previewed = preview_trigger.sync(client=client, body=models.TriggerPreview(trigger=cron), count=3)
        assert isinstance(previewed, models.Preview) and previewed.count == 3 and previewed.time_zone == "UTC"
        assert all(fire.wave for fire in previewed.fires) and previewed.fires[0].utc.tzinfo is not None

        body = schedule_body(time=future_time(3600))
        body["trigger"] = cron.to_dict()
        created = create_schedule.sync(client=client, body=models.ScheduleCreate.from_dict(body))
        assert isinstance(created, models.CreateResult)
        schedule_id = str(created.schedule_id)
        fetched = get_schedule.sync(schedule_id=schedule_id, client=client)
        assert isinstance(fetched, models.Schedule) and fetched.trigger.cron.expression == "*/5 * * * *"
        upcoming = get_upcoming.sync(schedule_id=schedule_id, client=client, count=2)
        assert isinstance(upcoming, models.ScheduleUpcoming) and str(upcoming.schedule_id) == schedule_id
        assert upcoming.count == 2 and all(fire.wave for fire in upcoming.fires)

        start = future_time(600)
        every = models.Trigger(
            interval=models.IntervalTrigger(start=start, every=90, unit=models.IntervalTriggerUnit.MINUTE)
        )
        body["trigger"] = every.to_dict()
        created = create_schedule.sync(client=client, body=models.ScheduleCreate.from_dict(body))
        assert isinstance(created, models.CreateResult)
        upcoming = get_upcoming.sync(schedule_id=str(created.schedule_id), client=client)
        assert isinstance(upcoming, models.ScheduleUpcoming) and upcoming.count == 10
        assert upcoming.fires[0].time == start
        # A change of kind is refused with the documented 400 Error.
        refused = update_schedule.sync(
            schedule_id=str(created.schedule_id), client=client, body=models.ScheduleUpdate(trigger=cron)
        )
        assert isinstance(refused, models.Error) and refused.error.code.value == 28100

        never = models.Trigger(cron=models.CronTrigger(expression="0 0 30 2 *"))
        bad = preview_trigger.sync(client=client, body=models.TriggerPreview(trigger=never))
        assert isinstance(bad, models.Error) and bad.error.message.startswith("trigger.cron.expression: day of month")
