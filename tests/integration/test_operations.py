"""Operations endpoints, metrics and structured logs on the real service, plus the regressions the
schemathesis contract run found (tests/contract)."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import shutil
import sys
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import logs
from service.api import keys
from service.app import create_app, drain
from service.settings import Settings
from service.store import migrations
from tests.integration.conftest import (
    Api,
    Service,
    engine_settings,
    next_whole_second,
    schedule_body,
    sent_msg_ids,
    wall_at,
)
from tests.integration.dbproxy import DatabaseProxy
from tests.integration.test_cli_and_serve import ROOT, cli_env
from tests.standin import StandIn
from tests.waiting import eventually


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(api: Api) -> str:
    reply = await api.call("GET", "/metrics", auth=None)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return reply.body.decode()


async def test_probes_answer_without_credentials(api: Api) -> None:
    healthz = await api.call("GET", "/healthz", auth=None)
    assert (healthz.status, healthz.json) == (200, {"status": "alive"})
    readyz = await api.call("GET", "/readyz", auth=None)
    assert (readyz.status, readyz.json) == (200, {"status": "ready"})
    # Wrong credentials change nothing outside /v4/: they are never read there.
    wrong = await api.call("GET", "/healthz", auth=None, headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert wrong.status == 200


async def test_drain_waits_for_requests_in_flight_and_says_draining(service: Service, api: Api) -> None:
    """`serve` calls drain() once its listener is closed (test_cli_and_serve measures the whole stop)."""
    created = (await api.create(schedule_body())).json["schedule_id"]
    lifecycle = service.app[keys.LIFECYCLE]
    lifecycle.request_started()  # a request of our own stays in flight
    assert await drain(service.app, timeout=0.2) is False
    reply = await api.call("GET", "/readyz", auth=None)
    assert (reply.status, reply.json) == (503, {"status": "draining"})
    assert reply.headers["Connection"] == "close"  # answers while draining send clients elsewhere
    assert (await api.get(created)).status == 200  # still served meanwhile
    finishing = asyncio.create_task(drain(service.app, timeout=5))
    # Proves a negative, so a bounded wait: drain does not return while our request is in flight.
    await asyncio.sleep(0.05)
    assert not finishing.done()
    lifecycle.request_finished()
    assert await finishing is True


async def test_readyz_says_draining_on_aiohttp_shutdown(service: Service, api: Api) -> None:
    await service.app.shutdown()  # the shutdown signal, for runners other than `serve` (web.run_app)
    reply = await api.call("GET", "/readyz", auth=None)
    assert (reply.status, reply.json) == (503, {"status": "draining"})
    assert (await api.call("GET", "/healthz", auth=None)).status == 200  # alive while it drains


async def test_readyz_says_migrations_pending(api: Api, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica whose sql/ has a migration the database lacks is not ready (its queries may need it)."""
    newer = tmp_path / "sql"
    shutil.copytree(migrations.default_directory(), newer)
    (newer / "9999_next.sql").write_text("SELECT 1;\n", encoding="utf-8")
    monkeypatch.setenv("SQL_DIR", str(newer))
    reply = await api.call("GET", "/readyz", auth=None)
    assert (reply.status, reply.json) == (503, {"status": "migrations pending"})


async def test_metrics_label_routes_by_template_and_leak_no_app_data(api: Api) -> None:
    created = await api.create(schedule_body(cid="cid-never-in-metrics"))
    schedule_id = created.json["schedule_id"]
    before = samples(await scrape(api))
    assert (await api.get(schedule_id)).status == 200
    assert (await api.call("GET", f"/nowhere/{schedule_id}", auth=None)).status == 404
    text = await scrape(api)
    after = samples(text)

    def requests(route: str, status: str) -> float:
        key = ("push_http_requests_total", (("method", "GET"), ("route", route), ("status", status)))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert requests("/v4/schedules/{schedule_id}", "200") == 1
    assert requests("unmatched", "404") == 1
    latency = ("push_http_request_duration_seconds_count", (("method", "GET"), ("route", "/v4/schedules/{schedule_id}")))
    assert after[latency] - before.get(latency, 0.0) == 1
    for secret in (schedule_id, api.auth.app_key, api.auth.master_secret, "cid-never-in-metrics"):
        assert secret not in text
    assert {("push_due_backlog", (("kind", kind),)) for kind in ("fires", "retries", "expired_leases")} <= set(after)
    in_use = after[("push_db_pool_connections", (("state", "in_use"),))]
    idle = after[("push_db_pool_connections", (("state", "idle"),))]
    assert in_use >= 0 and idle >= 0 and in_use + idle <= after[("push_db_pool_max_connections", ())] == 10


async def test_metrics_count_the_due_backlog(database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any) -> None:
    """Fires due and unplanned, retries due, and expired leases, counted at scrape time (no engine runs here)."""
    settings = Settings(database_url=database_url, data_dir=tmp_path, engine_enabled=False)
    server = await aiohttp_server(create_app(settings))
    async with aiohttp.ClientSession() as session:
        service = Service(server.app, str(server.make_url("")).rstrip("/"), session)
        api = await service.new_app()
        ids = [(await api.create(schedule_body())).json["schedule_id"] for _ in range(3)]
        assert backlog(samples(await scrape(api))) == {"fires": 0, "retries": 0, "expired_leases": 0}
        connection = await asyncpg.connect(database_url)
        try:  # what downtime leaves behind: two fires overdue, one retry due, one sender's lease run out
            await connection.execute(
                "UPDATE schedules SET next_fire_at = now() - interval '1 minute' WHERE id = ANY($1::uuid[])", ids[:2]
            )
            await connection.execute(
                "INSERT INTO runs (id, schedule_id, due_at, state, next_attempt_at) "
                "VALUES (gen_random_uuid(), $1, now(), 'pending', now() - interval '1 second')",
                ids[2],
            )
            await connection.execute(
                "INSERT INTO runs (id, schedule_id, due_at, state, lease_until) "
                "VALUES (gen_random_uuid(), $1, now() - interval '1 hour', 'sending', now() - interval '1 second')",
                ids[2],
            )
        finally:
            await connection.close()
        assert backlog(samples(await scrape(api))) == {"fires": 2, "retries": 1, "expired_leases": 1}


def backlog(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        kind: scraped[("push_due_backlog", (("kind", kind),))] for kind in ("fires", "retries", "expired_leases")
    }


async def test_probes_and_metrics_while_the_database_is_down(
    proxy: DatabaseProxy, tmp_path: pathlib.Path, aiohttp_server: Any
) -> None:
    settings = Settings(database_url=proxy.dsn, data_dir=tmp_path, db_timeout_seconds=1, engine_enabled=False)
    server = await aiohttp_server(create_app(settings))
    async with aiohttp.ClientSession() as session:
        service = Service(server.app, str(server.make_url("")).rstrip("/"), session)
        api = await service.new_app()
        assert "push_due_backlog" in await scrape(api)

        await proxy.stop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        readyz = await api.call("GET", "/readyz", auth=None)
        assert (readyz.status, readyz.json) == (503, {"status": "database unavailable"})
        text = await scrape(api)
        assert loop.time() - started < 5  # both answered within their probe timeouts
        assert "push_due_backlog" not in text  # absent, not stale
        assert "push_db_pool_connections" in text and "push_http_requests_total" in text
        assert (await api.call("GET", "/healthz", auth=None)).status == 200

        await proxy.start()
        assert (await api.call("GET", "/readyz", auth=None)).json == {"status": "ready"}
        api.check_against_spec()


async def test_dispatch_metrics_and_structured_logs(
    database_url: str, tmp_path: pathlib.Path, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """One push failing once then sent: a retry and a sent outcome, each with its lateness and a log line."""
    standin = StandIn()
    await standin.start()
    caplog.set_level(logging.INFO)
    try:
        server = await aiohttp_server(create_app(engine_settings(database_url, tmp_path, standin.url)))
        async with aiohttp.ClientSession() as session:
            service = Service(server.app, str(server.make_url("")).rstrip("/"), session)
            api = await service.new_app()
            before = samples(await scrape(api))
            due = next_whole_second(1.0)
            body = schedule_body(time=wall_at(due))
            body["push"]["custom_args"] = {"standin": {"fail_times": 1, "status": 500}}
            schedule_id = (await api.create(body)).json["schedule_id"]
            await eventually(lambda: sent_msg_ids(api, schedule_id), what="the push sent")
            after = samples(await scrape(api))
    finally:
        await standin.stop()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("push_runs_total", outcome="retry") == 1
    assert delta("push_runs_total", outcome="sent") == 1
    assert delta("push_dispatch_lateness_seconds_count", outcome="sent") == 1
    lateness = delta("push_dispatch_lateness_seconds_sum", outcome="sent")
    assert 0 < lateness < 10
    # Buckets resolve milliseconds: the 1 ms bucket exists (and a send right at its due instant may fall in it).
    assert ("push_dispatch_lateness_seconds_bucket", (("le", "0.001"), ("outcome", "sent"))) in after

    formatter = logs.JsonFormatter()
    dispatches = [json.loads(formatter.format(r)) for r in caplog.records if getattr(r, "event", None) == "dispatch"]
    assert [(line["outcome"], line["attempt"]) for line in dispatches] == [("retry", 1), ("sent", 2)]
    for line in dispatches:
        assert line["schedule_id"] == schedule_id and line["wave"] is None
        assert line["run_id"] == dispatches[0]["run_id"]
        assert line["due_at"] == due.isoformat() and line["lateness_ms"] > 0

    requests = [json.loads(formatter.format(r)) for r in caplog.records if getattr(r, "event", None) == "request"]
    created = [line for line in requests if line["method"] == "POST"]
    assert len(created) == 1
    assert {key: created[0][key] for key in ("route", "status", "app_key")} == {
        "route": "/v4/schedules", "status": 200, "app_key": api.auth.app_key
    }
    assert created[0]["ms"] > 0
    scraped = [line for line in requests if line["route"] == "/metrics"]
    assert scraped and all(line["app_key"] is None for line in scraped)
    every_line = "\n".join(formatter.format(record) for record in caplog.records)
    assert api.auth.master_secret not in every_line and api.auth.header.split()[1] not in every_line


# -- regressions found by schemathesis (tests/contract) ---------------------------------------------------


async def test_405_keeps_the_allow_header(api: Api) -> None:
    """RFC 9110: a 405 lists the route's methods; the envelope used to drop aiohttp's Allow header."""
    reply = await api.call("TRACE", "/healthz", auth=None)
    assert (reply.status, reply.error_code) == (405, 28100)
    assert set(reply.headers["Allow"].split(",")) == {"GET", "HEAD"}
    reply = await api.call("PATCH", "/v4/schedules/0eac1b80-c2ac-4b69-948b-c65b34b96512")
    assert (reply.status, reply.error_code) == (405, 28100)
    assert set(reply.headers["Allow"].split(",")) == {"GET", "HEAD", "PUT", "DELETE"}


@pytest.mark.parametrize(
    "where,message",
    [
        (("cid",), "cid: must not be null"),
        (("push", "from"), "push.from: must not be null"),
        (("push", "request_id"), "push.request_id: must not be null"),
        (("push", "body", "options"), "push.body.options: must not be null"),
        (("push", "body", "notification"), "push.body.notification: must not be null"),
        (("trigger", "single", "zone_type"), "trigger.single.zone_type: must not be null"),
    ],
)
async def test_null_is_not_a_value_of_a_documented_field(api: Api, where: tuple[str, ...], message: str) -> None:
    """`"cid": null` used to create a task; a null `from` would have failed only when the push was sent."""
    body = schedule_body()
    target = body
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = None
    reply = await api.create(body)
    assert (reply.status, reply.json) == (400, {"error": {"code": 28100, "message": message}})
    assert (await api.list()).json["total_count"] == 0


async def test_custom_args_may_be_null(api: Api) -> None:
    """custom_args is any JSON value, null included, and is forwarded as given."""
    body = schedule_body()
    body["push"]["custom_args"] = None
    created = await api.create(body)
    assert created.status == 200
    assert (await api.get(created.json["schedule_id"])).json["push"]["custom_args"] is None


async def test_cli_healthcheck_is_the_containers_probe(service: Service, unused_tcp_port: int) -> None:
    """`python -m service healthcheck` (the Dockerfile's HEALTHCHECK): 0 when /healthz answers, else 1."""

    async def healthcheck(port: str) -> tuple[int, str]:
        env = cli_env(HOST="0.0.0.0", PORT=port)  # a wildcard listen address is probed on loopback
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "healthcheck",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        return process.returncode or 0, stderr.decode()

    assert await healthcheck(service.base_url.rsplit(":", 1)[1]) == (0, "")
    code, stderr = await healthcheck(str(unused_tcp_port))
    assert code == 1 and f"unhealthy: http://127.0.0.1:{unused_tcp_port}/healthz" in stderr
