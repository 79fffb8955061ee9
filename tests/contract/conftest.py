"""The real service, as `python -m service` in its own process, for the tests that drive it from outside
through nothing but openapi.yaml: schemathesis and a generated client.

One process serves the whole session, on its own database made from the migrated template; its stdout
(the JSON logs) goes to a file the tests read. Its SIGTERM exit is checked when the session ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import TEMPLATE, _admin, with_database
from tests.integration.conftest import Credentials
from tests.integration.test_cli_and_serve import ROOT, cli_env, free_port


@dataclasses.dataclass(frozen=True)
class RunningService:
    base_url: str
    credentials: Credentials  # of an app made with `apps create` (no demo app on a DATABASE_URL database)
    log_path: pathlib.Path
    database_url: str

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8").splitlines()


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log_path: pathlib.Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the service was not ready within {timeout} s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def running_service(
    postgres_server_dsn: str, template_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    name = f"contract_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres_server_dsn, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
    database_url = with_database(postgres_server_dsn, name)
    data_dir = tmp_path_factory.mktemp("contract-service")
    log_path = data_dir / "stdout.jsonl"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = cli_env(DATABASE_URL=database_url, DATA_DIR=str(data_dir), PORT=str(port), LOG_LEVEL="INFO")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(base_url, process, log_path, timeout=60)
        created = subprocess.run(
            [sys.executable, "-m", "service", "apps", "create", "--name", "contract"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
        )
        app = json.loads(created.stdout)
        yield RunningService(base_url, Credentials(app["app_key"], app["master_secret"]), log_path, database_url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        asyncio.run(_admin(postgres_server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    assert returncode == 0, log_path.read_text()


def tool(name: str) -> str:
    """A console script installed beside this interpreter (the .venv's bin/)."""
    path = pathlib.Path(sys.executable).with_name(name)
    assert path.exists(), f"{name} is not installed: pip install -e '.[test]'"
    return str(path)


def tool_env() -> dict[str, str]:
    """The environment for a tool run: the venv's bin/ first on PATH, no colours."""
    env = dict(os.environ)
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    return env
