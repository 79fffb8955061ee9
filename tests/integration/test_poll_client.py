"""examples/poll_client.py, the README's client of the polling pattern, run against the real service: as a
library (its waits recorded) and as the command the README shows (a real process, real waits)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import pathlib
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import engine_settings, schedule_body, start_service
from tests.integration.test_cli_and_serve import ROOT
from tests.standin import StandIn

_SPEC = importlib.util.spec_from_file_location("poll_client", ROOT / "examples" / "poll_client.py")
assert _SPEC is not None and _SPEC.loader is not None
poll_client = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(poll_client)

PUSH = {
    "to": {"alias": ["{{user}}"]},
    "body": {"platform": "web", "notification": {"alert": "order {{order}} shipped"}},
}


async def test_the_client_follows_location_and_retry_after_to_the_outcome(
    database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    # Each push takes 0.3 s at the stand-in, two at a time: the run is under way for a few polls.
    slow = StandIn(delay_seconds=0.3)
    await slow.start()
    try:
        service = await start_service(
            engine_settings(database_url, tmp_path, slow.url, send_concurrency=2), aiohttp_server, session
        )
        api = await service.new_app()
        created = await api.create(schedule_body(push=PUSH, params={"user": "all", "order": "0"}))
        schedule_id = created.json["schedule_id"]
        waits: list[float] = []

        def recording_sleep(seconds: float) -> None:
            waits.append(seconds)
            time.sleep(0.1)  # a poller that honours Retry-After waits that long; the test need not

        body = {"QueryParameters": [{"order": str(number)} for number in range(6)]}
        outcome = await asyncio.to_thread(
            poll_client.follow,
            f"{service.base_url}/v4/schedules/{schedule_id}/run",
            body=body,
            auth=(api.auth.app_key, api.auth.master_secret),
            idempotency_key="shipping-batch-7",
            sleep=recording_sleep,
        )
        assert outcome["status"] == "succeeded" and outcome["total"] == 6 and len(outcome["msg_ids"]) == 6
        assert sorted(d.body["body"]["notification"]["alert"] for d in slow.delivered()) == [
            f"order {number} shipped" for number in range(6)
        ]
        # It polled more than once, each time after the Retry-After the service gave.
        assert len(waits) >= 2 and set(waits) == {2.0}

        # The same key again: the first run's outcome, no second run.
        again = await asyncio.to_thread(
            poll_client.follow,
            f"{service.base_url}/v4/schedules/{schedule_id}/run",
            body=body,
            auth=(api.auth.app_key, api.auth.master_secret),
            idempotency_key="shipping-batch-7",
            sleep=recording_sleep,
        )
        assert again == outcome and len(slow.delivered()) == 6

        # Errors come back as the envelope.
        with pytest.raises(poll_client.ErrorResponse) as raised:
            await asyncio.to_thread(
                poll_client.follow, f"{service.base_url}/v4/schedules/{schedule_id}/run",
                body={"QueryParameters": {"nobody": "x"}}, auth=(api.auth.app_key, api.auth.master_secret),
            )
        assert raised.value.status == 400 and raised.value.code == 28100
    finally:
        await slow.stop()


async def test_the_readme_command_follows_a_polling_webhook(
    database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any, session: aiohttp.ClientSession, standin: StandIn
) -> None:
    settings = engine_settings(database_url, tmp_path, standin.url, run_poll_seconds=1)
    service = await start_service(settings, aiohttp_server, session)
    api = await service.new_app()
    created = await api.create(schedule_body(push=PUSH, params={"user": "all", "order": "0"}))
    hook = await api.call("POST", f"/v4/schedules/{created.json['schedule_id']}/webhook")
    command = [sys.executable, str(ROOT / "examples" / "poll_client.py"), service.base_url + hook.json["poll_url"],
               "--params", '{"order": "1042"}']  # fmt: skip
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "succeeded" and outcome["source"] == "webhook"
    [delivery] = standin.delivered()
    assert outcome["msg_ids"] == [delivery.msg_id]
    assert delivery.body["body"]["notification"]["alert"] == "order 1042 shipped"
