"""openapi.yaml enforced from outside: schemathesis drives the real service process with generated valid and
invalid requests (examples, coverage, fuzzing and stateful phases), authenticated as an app made with `apps create`.

Checks: every check schemathesis has except `positive_data_acceptance`, which expects every schema-valid
body to be accepted, while the contract has rules no JSON Schema carries (a time in the future and within
a year, the name's alphabet counted in UTF-8 bytes, `enabled: true` on create, 4000 bytes of payload).
So: no 5xx, every status, content type, header and body as documented, invalid input refused with 4xx in
the error envelope, 405 with Allow, deleted resources gone, created ones readable, auth never ignored.

`--mode all`: positive and negative data (wrong types, values past a schema's bounds, unknown fields, bodies
that are not JSON), the latter checked by `negative_data_rejection`: refused with a 4xx. Its default list of
refusals lacks 413, which is the right refusal of a schema-violating body that is also over 64 KiB (a
fuzzed array of 1000 aliases, say); NEGATIVE_REFUSALS adds it, and nothing else.

`--generation-with-security-parameters false`: schemathesis would otherwise mix "drop the Authorization
header" into negative cases of other parameters while its `--auth` adds the header back, and then report
the valid request's 200 as "schema-violating request accepted" (a known false positive of the tool).

SCHEMATHESIS_MAX_EXAMPLES and SCHEMATHESIS_SEED override the bounded, reproducible defaults.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import MEASURED
from tests.contract.conftest import RunningService, tool, tool_env
from tests.integration.test_cli_and_serve import ROOT

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "300"))
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261123")
# schemathesis's default list for negative_data_rejection (5xx included: not_a_server_error catches those), plus 413.
NEGATIVE_REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
# The run's closing line: "Test cases:\n  1910 generated, 1910 passed" (or "..., N found N unique failures").
_CASES = re.compile(r"Test cases:\s*\n\s*(\d+) generated, (.*)")


@pytest.mark.timeout(600)
def test_openapi_contract_holds_under_schemathesis(
    running_service: RunningService, tmp_path: object, record_property: Callable[[str, object], None]
) -> None:
    credentials = running_service.credentials
    config = pathlib.Path(str(tmp_path)) / "schemathesis.toml"
    # No per-operation check settings: the stateful phase runs the run-wide checks whatever [[operations]] says
    # (schemathesis 4.32), so the API itself must hold use_after_free everywhere (GET .../webhook: 404 once revoked).
    config.write_text(f"[checks.negative_data_rejection]\nexpected-statuses = {json.dumps(NEGATIVE_REFUSALS)}\n")
    command = [
        tool("st"), "--config-file", str(config), "run", str(ROOT / "openapi.yaml"),
        "--url", running_service.base_url,
        "--auth", f"{credentials.app_key}:{credentials.master_secret}",
        "--mode", "all",  # positive and negative data (the default of this version, said so it stays)
        "--checks", "all",
        "--exclude-checks", "positive_data_acceptance",
        "--generation-with-security-parameters", "false",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", SEED,
        "--generation-database", "none",
        "--request-timeout", "15",
        "--continue-on-failure",
        "--no-color",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=str(tmp_path), env=tool_env(), capture_output=True, text=True, timeout=540
    )
    output = result.stdout + result.stderr
    cases = _CASES.search(output)
    assert cases is not None, output
    summary = f"schemathesis: {cases.group(1)} cases generated, {cases.group(2)} (max {MAX_EXAMPLES} per operation, seed {SEED})"
    record_property(MEASURED, summary)
    assert result.returncode == 0, output
    assert int(cases.group(1)) >= 500, output  # all four phases ran over every operation

    # The run also exercised the logs: every stdout line is one JSON object, and no secret is in any.
    lines = running_service.log_lines()
    events = [json.loads(line) for line in lines]
    requests = [event for event in events if event.get("event") == "request"]
    assert len(requests) >= int(cases.group(1)) // 2
    assert all({"method", "route", "status", "ms", "app_key"} <= set(event) for event in requests)
    # Route labels stay templates whatever paths the fuzzer invented.
    assert {event["route"] for event in requests} <= {
        "/v4/schedules", "/v4/schedules/{schedule_id}", "/v4/schedules/{schedule_id}/msg-ids",
        "/v4/schedules/{schedule_id}/msg_ids", "/v4/schedules/{schedule_id}/upcoming", "/v4/schedules/preview",
        "/v4/schedules/{schedule_id}/runs", "/v4/schedules/{schedule_id}/runs/{run_id}",
        "/v4/schedules/{schedule_id}/run", "/v4/schedules/{schedule_id}/webhook", "/hooks/{token}",
        "/hooks/{token}/poll", "/hooks/{token}/runs/{run_id}", "/healthz", "/readyz", "/metrics", "unmatched",
    }  # fmt: skip
    # No log line holds the secret the requests carried.
    assert not any(credentials.master_secret in line for line in lines)
