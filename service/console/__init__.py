"""The browser console (issue 14): a few static files served at /console/, and the security headers every
console response carries.

The console is a client of the public /v4 API like any other: the page itself is public (no Basic auth, no
data in it), and each data call the page makes carries the app key and master secret the user typed. So the
console can do nothing a client with those credentials cannot do, and this module needs nothing of the
service but the files beside it.

The files are served from a list read once at import (`ASSETS`), never from a path the request names, so no
request can reach a file outside `static/`. They are plain ES modules and one stylesheet, with no build step.
"""

from __future__ import annotations

import pathlib

from aiohttp import web

STATIC = pathlib.Path(__file__).with_name("static")
INDEX = "index.html"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The files a request may name: every file of static/ with a type above, by its name.
ASSETS = {
    path.name: path for path in STATIC.iterdir() if path.is_file() and path.suffix in _CONTENT_TYPES
}

# No inline script or style, nothing from another origin, no framing: the page holds a master secret.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
PREFIX = "/console"

routes = web.RouteTableDef()


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer under /console, the redirect and the 404s included."""
    if is_console_path(request.path):
        response.headers.update(SECURITY_HEADERS)


@routes.get(PREFIX)
async def console_redirect(request: web.Request) -> web.Response:
    """/console -> /console/, relative, so it also holds behind a proxy that mounts the service under a path."""
    raise web.HTTPMovedPermanently("console/")


def _file(name: str) -> web.FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise web.HTTPNotFound()
    # no-cache: the browser revalidates (If-Modified-Since, 304), so a deploy's new files are used at once.
    return web.FileResponse(
        path, headers={"Content-Type": _CONTENT_TYPES[path.suffix], "Cache-Control": "no-cache"}
    )


@routes.get(PREFIX + "/")
async def console_index(request: web.Request) -> web.FileResponse:
    return _file(INDEX)


@routes.get(PREFIX + "/{asset}")
async def console_asset(request: web.Request) -> web.FileResponse:
    return _file(request.match_info["asset"])
