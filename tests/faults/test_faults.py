"""Scenarios a-f of the fault suite at their quick size (see conftest.py and bench/faults.py)."""

from __future__ import annotations

import pytest

from tests.faults.conftest import assert_kept_promise, scenario_params


@pytest.mark.parametrize(
    "scenario",
    scenario_params("pg-outage", "db-cuts", "replica-kill", "push-faults", "slow-api", "auth-flood"),
)
def test_promise_holds_under_fault(scenario: str, quick_outcomes: dict[str, object]) -> None:
    """a PostgreSQL stopped mid-burst; b every connection cut repeatedly; c one of three replicas SIGKILLed;
    d the push API failing, hanging, resetting and throttling; e the push API answering just inside its
    timeout; f a flood of requests with random app keys. Every fire delivered, never under two keys, one run
    per task, every run recorded."""
    assert_kept_promise(quick_outcomes[scenario])
