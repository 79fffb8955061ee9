"""The fault scenarios at their quick size. bench/faults.py holds the one implementation (`python -m
bench.faults` runs the full sizes); here each scenario runs small (300 tasks or fewer, a 2 s outage, 2 s
leases) and each test asserts the promise's "must" checks and that the fault really struck, never a timing
bound.

Every scenario starts its own processes and mostly waits (for its instant, an outage, a lease), so the
scenarios the session collected run from one session fixture: first the in-process ones (g) together (an
engine in the test process must not share the cores with a dozen starting processes), then the others two at
a time (`FAULTS_PARALLEL`, 1 for one after another), longest first; each test then asserts its own outcome.
More at once starves them of the two cores and measures the machine rather than the engine. `FAULTS_REPORT=FILE` writes every scenario's
full report there.
"""

from __future__ import annotations

import asyncio
import os
import traceback
import uuid
from collections.abc import Iterator

import pytest

from bench import faults
from tests.conftest import SUMMARY, TEMPLATE, _admin, with_database

# Defects of the engine at the time this suite was written (measured, see bench/README.md "Faults"): these
# tests fail, and are marked so strictly, so the marker must go when the rewritten engine makes them pass.
# Scenarios the engine is known to fail, each marked xfail(strict): empty since the engine rewrite (sql/0005,
# service/engine in parts), which fixed all four the suite found (bench/README.md, "Faults"). A strict xfail
# that passes fails the suite, so a fixed defect cannot keep its marker.
KNOWN_FAILING_TODAY: dict[str, str] = {}


def scenario_params(*names: str) -> list[object]:
    """pytest parameters for the named scenarios, the known failures marked xfail(strict)."""
    return [
        pytest.param(name, id=name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILING_TODAY[name]))
        if name in KNOWN_FAILING_TODAY
        else pytest.param(name, id=name)
        for name in names
    ]


# Longest first, so the two lanes finish together.
ORDER = ("pg-outage", "replica-kill", "slow-api", "push-faults", "db-cuts", "auth-flood",
         "recorder-exception", "fire-loop-exception")


async def _run(names: list[str], dsns: dict[str, str | None]) -> dict[str, object]:
    parallel = max(1, int(os.environ.get("FAULTS_PARALLEL", "2")))
    lanes = asyncio.Semaphore(parallel)

    async def one(name: str) -> object:
        async with lanes:
            try:
                return await faults.SCENARIOS[name]("quick", dsn=dsns[name])
            except Exception as exc:  # noqa: BLE001 - reported by the scenario's own test
                return "".join(traceback.format_exception(exc))

    ordered = sorted(names, key=lambda name: ORDER.index(name) if name in ORDER else len(ORDER))
    in_process = [name for name in ordered if faults.SCENARIOS[name].in_process]
    outcomes = dict(zip(in_process, await asyncio.gather(*(one(name) for name in in_process)), strict=False))
    others = [name for name in ordered if name not in outcomes]
    outcomes.update(zip(others, await asyncio.gather(*(one(name) for name in others)), strict=False))
    return outcomes


@pytest.fixture(scope="session")
def quick_outcomes(
    request: pytest.FixtureRequest, postgres_server_dsn: str, template_dsn: str
) -> Iterator[dict[str, object]]:
    """name -> Outcome (or the traceback of a scenario that raised), for every scenario a collected test asks for."""
    names = sorted(
        {
            item.callspec.params["scenario"]
            for item in request.session.items
            if "quick_outcomes" in getattr(item, "fixturenames", ()) and "scenario" in item.callspec.params
        }
    )
    # A fresh database per scenario on the session's server; the one that stops PostgreSQL brings its own.
    dsns: dict[str, str | None] = {}
    created = []
    for name in names:
        if faults.SCENARIOS[name].own_database:
            dsns[name] = None
            continue
        database = f"f_{uuid.uuid4().hex[:16]}"
        asyncio.run(_admin(postgres_server_dsn, f"CREATE DATABASE {database} TEMPLATE {TEMPLATE}"))
        created.append(database)
        dsns[name] = with_database(postgres_server_dsn, database)
    try:
        outcomes = asyncio.run(_run(names, dsns))
        report = os.environ.get("FAULTS_REPORT")
        if report:  # every scenario's full report, passed or not
            with open(report, "w", encoding="utf-8") as output:
                for outcome in outcomes.values():
                    print(outcome.report() if isinstance(outcome, faults.Outcome) else outcome, file=output)
        finished = [outcome for outcome in outcomes.values() if isinstance(outcome, faults.Outcome)]
        if finished:
            SUMMARY.append("fault scenarios, quick size (bench/faults.py; verdicts without timing bounds):")
            SUMMARY.extend(faults.table(finished, timing=False).splitlines())
        yield outcomes
    finally:
        for database in created:
            asyncio.run(_admin(postgres_server_dsn, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))


def assert_kept_promise(outcome: object) -> None:
    """The scenario ran, its fault struck, and every "must" check held (timing bounds are bench/'s)."""
    assert isinstance(outcome, faults.Outcome), f"the scenario raised:\n{outcome}"
    problems = outcome.problems(timing=False)
    assert not problems, outcome.report()
