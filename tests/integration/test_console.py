"""The console's files over HTTP (issue 14): served by the service itself without credentials, every answer
under /console with its security headers, and the access log naming route templates. The browser tests
(test_console_browser.py) drive the page itself."""

from __future__ import annotations

import logging

import pytest

from service import console
from tests.integration.conftest import Service

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def assert_secured(headers: object) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value, name  # type: ignore[index]
    policy = headers["Content-Security-Policy"]  # type: ignore[index]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    # No inline script or style, nothing from elsewhere, no framing.
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


async def test_the_page_and_its_files_need_no_credentials_and_carry_the_security_headers(service: Service) -> None:
    async with service.session.get(service.base_url + "/console/") as page:
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assert_secured(page.headers)
    # The page names its files; each is served with its type and the same headers.
    for name, content_type in (("main.js", "text/javascript"), ("console.css", "text/css"), ("api.js", "text/javascript")):
        assert name in html or name == "api.js"
        async with service.session.get(f"{service.base_url}/console/{name}") as asset:
            assert asset.status == 200 and asset.content_type == content_type, name
            assert asset.headers["Cache-Control"] == "no-cache"
            assert_secured(asset.headers)
    assert "<script>" not in html and " style=" not in html  # nothing inline for the CSP to refuse


async def test_console_without_a_slash_redirects_to_the_page(service: Service) -> None:
    async with service.session.get(service.base_url + "/console", allow_redirects=False) as answer:
        assert answer.status == 301 and answer.headers["Location"] == "console/"
        assert_secured(answer.headers)
    async with service.session.get(service.base_url + "/console") as followed:
        assert followed.status == 200 and str(followed.url).endswith("/console/")


@pytest.mark.parametrize("path", ["/console/nothing.js", "/console/..%2fapp.py", "/console/__init__.py", "/console/index.html%00"])
async def test_only_the_console_files_are_served(service: Service, path: str) -> None:
    async with service.session.get(service.base_url + path) as answer:
        assert answer.status == 404
        assert (await answer.json())["error"]["code"] == 28104
        assert_secured(answer.headers)


async def test_the_api_answers_carry_no_console_headers(service: Service) -> None:
    async with service.session.get(service.base_url + "/healthz") as answer:
        assert "Content-Security-Policy" not in answer.headers


async def test_the_access_log_names_the_console_routes_as_templates(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    for path in ("/console", "/console/", "/console/main.js", "/console/missing.css"):
        async with service.session.get(service.base_url + path, allow_redirects=False) as answer:
            await answer.read()
    routes = [(record.route, record.status) for record in caplog.records if getattr(record, "event", None) == "request"]
    assert routes == [
        ("/console", 301), ("/console/", 200), ("/console/{asset}", 200), ("/console/{asset}", 404),
    ]


def test_every_file_the_page_loads_is_served() -> None:
    """The modules import each other by name: each name must be in ASSETS (read from static/ at import)."""
    import re

    names = set(console.ASSETS)
    for path in console.ASSETS.values():
        for imported in re.findall(r"from '\./([\w.-]+)'", path.read_text(encoding="utf-8")):
            assert imported in names, (path.name, imported)
    assert {"index.html", "main.js", "console.css"} <= names
