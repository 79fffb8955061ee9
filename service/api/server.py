"""The HTTP server under the application, as `serve` runs it.

What aiohttp's HTTP parser refuses before any route or middleware runs (a control byte in a header, a method no
registry knows, headers past 8 KiB, a Content-Length that is no number) got aiohttp's plain-text 400. Clients
of this API read one envelope for every error, so those answers carry it too: code 28100 and the parser's
reason, the status kept. Everything else is aiohttp's AppRunner as it is.
"""

from __future__ import annotations

from aiohttp import web, web_protocol, web_request

from service.api.middleware import error_response
from service.domain import errors


class _EnvelopeRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web_request.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own first: it logs the error, and refuses when a response has begun already.
        super().handle_error(request, status, exc, message)
        if status >= 500:
            error: errors.ServiceError = errors.InternalError()
        else:
            # The parser's reason, its first line: the rest repeats the offending bytes, a header's value maybe.
            reason = (message or "refused by the parser").splitlines()[0].rstrip(": ")
            error = errors.InvalidParameter(f"request: not valid HTTP ({reason})")
            error.http_status = status
        response = error_response(error)
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class ServiceRunner(web.AppRunner):
    """aiohttp's AppRunner, whose connections answer parser errors in the envelope."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application builds its Server itself (Application._make_handler); the only change is which
        # RequestHandler each connection gets, so the instance takes the subclass as it is.
        server.__class__ = _EnvelopeServer
        return server
