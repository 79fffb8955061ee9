"""g: an unexpected exception inside the engine. The current service.engine.dispatcher.Engine runs in this
process on a real RunQueue (real PostgreSQL) and sends to the stand-in; one of its methods raises RuntimeError
once: `record_results` (the recorder) or `claim_planned` (the fire loop). Lease and reservation are 30 s, so
neither takeover path can hide a loop that died: every fire must still be delivered and recorded sent
within a few seconds of its instant. The scenario is bench.faults.engine_exception."""

from __future__ import annotations

import pytest

from tests.faults.conftest import assert_kept_promise, scenario_params


@pytest.mark.parametrize("scenario", scenario_params("recorder-exception", "fire-loop-exception"))
def test_engine_survives_an_exception(scenario: str, quick_outcomes: dict[str, object]) -> None:
    assert_kept_promise(quick_outcomes[scenario])
