"""The database going away: requests answer 503 28203 (retryable) and the service recovers when it returns."""

from __future__ import annotations

import pathlib
from typing import Any

import aiohttp

from service.app import create_app
from service.settings import Settings
from tests.integration.conftest import Api, Service, schedule_body
from tests.integration.dbproxy import DatabaseProxy


async def test_outage_answers_503_and_recovers(proxy: DatabaseProxy, tmp_path: pathlib.Path, aiohttp_server: Any) -> None:
    settings = Settings(database_url=proxy.dsn, data_dir=tmp_path, db_timeout_seconds=2)
    server = await aiohttp_server(create_app(settings))
    async with aiohttp.ClientSession() as session:
        service = Service(server.app, str(server.make_url("")).rstrip("/"), session)
        api: Api = await service.new_app()
        created = await api.create(schedule_body())
        assert created.status == 200

        await proxy.stop()
        for _ in range(3):  # open connections are cut, new ones refused: every call is retryable
            down = await api.create(schedule_body(name="during_outage"))
            assert down.status == 503
            assert down.json == {"error": {"code": 28203, "message": "Execute action timeout, please try later again."}}

        await proxy.start()
        listed = await api.list()
        assert listed.status == 200
        # Exactly the one acknowledged task exists: nothing refused during the outage was half-written.
        assert [item["schedule_id"] for item in listed.json["schedules"]] == [created.json["schedule_id"]]
        api.check_against_spec()
