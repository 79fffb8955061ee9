"""Project rules checked by the suite itself: layering, the OpenAPI document, and spec/route agreement."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from service.api import handlers, ops

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_import_layers_hold() -> None:
    result = subprocess.run(
        [str(pathlib.Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_engine_never_imports_the_http_server_side() -> None:
    for path in (ROOT / "service" / "engine").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "from aiohttp import web" not in text and "aiohttp.web" not in text, path


def test_handlers_build_no_sql() -> None:
    sql = re.compile(r"\b(SELECT \S|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b", re.IGNORECASE)
    for path in (ROOT / "service" / "api").rglob("*.py"):
        found = sql.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.name} holds SQL: {found and found.group(0)}"


def test_openapi_document_is_valid() -> None:
    spec, _ = read_from_filename(str(ROOT / "openapi.yaml"))
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert spec["servers"] == [{"url": "/"}]


def test_every_served_route_is_in_the_spec_and_back() -> None:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    }
    served = {
        (route.method, route.path)  # type: ignore[attr-defined]
        for table in (handlers.routes, ops.routes)
        for route in table
    }
    assert served == documented
