"""The Dockerfile, checked where no Docker engine runs: hadolint, and the invariants the image relies on."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import pathlib
import shlex
import subprocess
import sys

import pytest

from service import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def final_stage() -> list[tuple[str, str]]:
    found = instructions()
    last_from = max(index for index, (name, _) in enumerate(found) if name == "FROM")
    return found[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for name, arguments in stage:
        if name == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def exec_form(arguments: str) -> list[str]:
    """An instruction's JSON (exec) form; the shell form would put a shell between tini and the service."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"not the exec form: {arguments}"
    return value


def test_hadolint_is_clean() -> None:
    hadolint = pathlib.Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_inline_hadolint_ignores_say_why() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert number > 0 and lines[number - 1].startswith("# ") and "hadolint" not in lines[number - 1], (
                f"line {number + 1}: an ignore needs the reason on the comment line above it"
            )


def test_multi_stage_on_slim_python_3_11() -> None:
    bases = [arguments.split()[0] for name, arguments in instructions() if name == "FROM"]
    assert len(bases) >= 2 and set(bases) == {"python:3.11-slim"}
    assert any("--from=builder" in arguments for name, arguments in final_stage() if name == "COPY")


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [arguments for name, arguments in final_stage() if name == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_tini_is_pid_1_and_the_command_exists_in_the_package() -> None:
    stage = final_stage()
    (entrypoint,) = [exec_form(arguments) for name, arguments in stage if name == "ENTRYPOINT"]
    assert entrypoint == ["tini", "--"]
    assert any("install" in arguments and "tini" in arguments for name, arguments in stage if name == "RUN")
    (command,) = [exec_form(arguments) for name, arguments in stage if name == "CMD"]
    assert command[:3] == ["python", "-m", "service"]
    assert importlib.util.find_spec("service.__main__") is not None


def test_healthcheck_runs_the_cli_healthcheck() -> None:
    (healthcheck,) = [arguments for name, arguments in final_stage() if name == "HEALTHCHECK"]
    command = exec_form(healthcheck.split("CMD", 1)[1].strip())
    assert command == ["python", "-m", "service", "healthcheck"]
    subcommands = next(
        action.choices for action in cli._parser()._actions if action.dest == "command"  # noqa: SLF001
    )
    assert "healthcheck" in subcommands


def test_data_volume_settings_and_migrations_line_up() -> None:
    stage = final_stage()
    env = env_of(stage)
    assert env["HOST"] == "0.0.0.0" and env["DATA_DIR"] == "/data"
    assert env["WORKERS"] == "auto", "the container uses the cores it is given"
    assert [arguments for name, arguments in stage if name == "VOLUME"] == ['["/data"]']
    assert [arguments for name, arguments in stage if name == "EXPOSE"] == [env["PORT"]]
    copies = [arguments.split() for name, arguments in stage if name == "COPY" and "--from" not in arguments]
    assert ["sql", env["SQL_DIR"]] in copies, "SQL_DIR must point where sql/ is copied"
    assert sorted((ROOT / "sql").glob("*.sql")), "no migrations to copy"


@pytest.mark.parametrize("needed", ["pyproject.toml", "README.md", "service/app.py", "sql/0001_initial.sql"])
def test_dockerignore_keeps_what_the_build_copies(needed: str) -> None:
    """.dockerignore: `*` then `!` exceptions; the last matching pattern decides, as Docker's does."""
    kept = True
    for pattern in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(needed, pattern) or needed.startswith(pattern + "/"):
            kept = negated
    assert kept, f"{needed} is excluded from the build context"
