"""Project rules checked by the suite itself: layering, the OpenAPI document, spec/route agreement, and links
in the documentation that stay inside the repository."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from service import console
from service.api import handlers, ops, triggers

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
        for table in (handlers.routes, triggers.routes, ops.routes, console.routes)
        for route in table
        if route.method != "*"  # type: ignore[attr-defined]  # a catch-all answering 405 (preview's other methods)
        # The browser console's page and files (HTML, JS, CSS) are no API: a client generated from the spec, or
        # schemathesis, has nothing to call there. The console itself calls only the /v4 paths documented.
        and not console.is_console_path(route.path)  # type: ignore[attr-defined]
    }
    assert served == documented


def test_the_console_is_served_outside_the_api() -> None:
    """What the spec test above leaves out: only the console's own paths, none under /v4/ (where Basic auth
    applies) and none the spec documents."""
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    paths = {route.path for route in console.routes}  # type: ignore[attr-defined]
    assert paths == {"/console", "/console/", "/console/{asset}"}
    assert not paths & set(spec["paths"])


# -- documentation links --------------------------------------------------------------------------------------

_FENCED_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def documentation_files() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as hyphens,
    a repeated heading suffixed -1, -2, ..."""
    anchors: set[str] = set()
    for heading in _HEADING.findall(_FENCED_BLOCK.sub("", markdown)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.replace("`", "").strip().lower()).replace(" ", "-")
        anchor, suffix = slug, 0
        while anchor in anchors:
            suffix += 1
            anchor = f"{slug}-{suffix}"
        anchors.add(anchor)
    return anchors


def broken_links(source: pathlib.Path, markdown: str) -> list[str]:
    """Every relative link of `markdown` (the text of `source`) that leaves the repository, names no file,
    or names a heading its target lacks. Links to the web are not followed."""
    text = _FENCED_BLOCK.sub("", markdown)
    problems = []
    for target in [*_INLINE_LINK.findall(text), *_REFERENCE_LINK.findall(text)]:
        if _EXTERNAL.match(target) or target.startswith("//"):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (source.parent / path_part).resolve() if path_part else source
        if resolved != ROOT and ROOT not in resolved.parents:
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif (
            fragment
            and resolved.suffix == ".md"
            and fragment not in heading_anchors(resolved.read_text(encoding="utf-8"))
        ):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    return problems


def test_documentation_links_stay_inside_the_repository() -> None:
    """A clone has only the repository: a link into a sibling directory (the README once pointed at
    ../shared/API_CONTRACT.md) is dead for every reader."""
    problems = {
        str(path.relative_to(ROOT)): found
        for path in documentation_files()
        if (found := broken_links(path, path.read_text(encoding="utf-8")))
    }
    assert problems == {}


def test_link_check_catches_dead_and_escaping_links() -> None:
    readme = ROOT / "README.md"
    markdown = (
        "The contract is [`../shared/API_CONTRACT.md`](../shared/API_CONTRACT.md).\n"
        "See [the spec](openapi.yaml), [gone](docs/gone.md), [a section](docs/api.md#no-such-heading),\n"
        "[the web](https://example.com/x) and [errors](docs/api.md#error-codes).\n\n"
        "[ref]: ../../etc/passwd\n"
        "```sh\necho \"[not a link](../in-a-code-block)\"\n```\n"
    )
    assert broken_links(readme, markdown) == [
        "../shared/API_CONTRACT.md: outside the repository",
        "docs/gone.md: no such file",
        "docs/api.md#no-such-heading: no heading #no-such-heading in docs/api.md",
        "../../etc/passwd: outside the repository",
    ]
