"""Push backends: where a run's push goes. `http` posts to an EngageLab-style push API; `local` is the sink.

A backend only sends and reports what happened; what the outcome means (retry, fail) is decided in
service.domain.dispatch, and recording it is the dispatcher's job.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import time
from typing import Any, Protocol

from service.domain import credentials, dispatch, params, timing, types, wirejson
from service.engine import pushclient

log = logging.getLogger(__name__)

OFFSET_HEADER = "X-Push-Utc-Offset"
# The most of a push API's answer that is read.
MAX_ANSWER_BYTES = 64 * 1024


def outgoing_push(run: types.RunToSend) -> dict[str, Any]:
    """The stored push, its parameters filled in (service.domain.params), with the run's idempotency key as
    body.options.cid.

    The key replaces any cid the user stored: a fixed cid would make the backend drop every later fire.
    """
    # Copy only the dicts on the path to the key: the stored push is shared and must stay untouched (render
    # copies what it fills in, and returns the push itself when there is nothing to fill).
    push = dict(params.render(run.push, run.params))
    body = dict(push.get("body") or {})
    options = body.get("options")
    options = dict(options) if isinstance(options, dict) else {}
    options["cid"] = run.idempotency_key
    body["options"] = options
    push["body"] = body
    return push


class PushBackend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, run: types.RunToSend) -> tuple[dispatch.SendOutcome, dict[str, Any] | None]:
        """Send one run; returns its outcome and, for the local sink, the payload to keep on the run."""
        ...


class LocalBackend:
    """No push API configured: the service is its own sink. It makes the msg_id and keeps the payload."""

    def __init__(self) -> None:
        # Time-ordered, unique within a process, distinct across processes and restarts.
        self._prefix = f"{int(time.time() * 1000):x}{os.getpid():x}"
        self._counter = itertools.count(1)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, run: types.RunToSend) -> tuple[dispatch.SendOutcome, dict[str, Any] | None]:
        payload = outgoing_push(run)
        msg_id = f"local-{self._prefix}-{next(self._counter)}"
        log.info("local push sent: schedule %s run %s msg_id %s", run.schedule_id, run.run_id, msg_id)
        return dispatch.SendOutcome("sent", msg_id=msg_id), payload


NO_PUSH_CREDENTIALS = (
    "the app has no push credentials (give them with `apps update KEY --push-key K --push-secret-file F`; "
    "PUSH_REQUIRE_CREDENTIALS=false sends without Authorization)"
)


class HttpBackend:
    """POST {url}/v4/push with the app's push credentials, over kept-alive connections (service.engine.pushclient)
    and a per-send timeout."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float,
        concurrency: int,
        credentials_key: str | None,
        require_credentials: bool,
    ) -> None:
        self._url = base_url.rstrip("/") + "/v4/push"
        self._timeout = timeout_seconds
        self._concurrency = concurrency
        self._credentials_key = credentials_key
        self._require_credentials = require_credentials
        self._client: pushclient.PushClient | None = None
        self._authorization: dict[bytes, str] = {}

    async def start(self) -> None:
        self._client = pushclient.PushClient(self._url, limit=self._concurrency)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _headers(self, run: types.RunToSend) -> list[tuple[str, str]]:
        headers = []
        if run.utc_offset_minutes is not None:
            headers.append((OFFSET_HEADER, timing.format_offset(run.utc_offset_minutes)))
        if run.push_key and run.push_secret_encrypted:
            headers.append(("Authorization", self._basic_auth(run.push_key, run.push_secret_encrypted)))
        return headers

    def _basic_auth(self, push_key: str, encrypted: bytes) -> str:
        cached = self._authorization.get(encrypted)
        if cached is None:
            if not self._credentials_key:
                raise ValueError("the app has push credentials but PUSH_CREDENTIALS_KEY is not set")
            secret = credentials.decrypt_push_secret(encrypted, self._credentials_key)
            cached = credentials.basic_header(push_key, secret)
            self._authorization[encrypted] = cached
        return cached

    async def send(self, run: types.RunToSend) -> tuple[dispatch.SendOutcome, dict[str, Any] | None]:
        assert self._client is not None, "HttpBackend.start() was not awaited"
        if self._require_credentials and not (run.push_key and run.push_secret_encrypted):
            # Many tenants share this push API: a push with no Authorization would go out as nobody's, or as
            # whoever the push API takes an unauthenticated caller for. Failed at once: no retry can help.
            return dispatch.SendOutcome("failed", error=NO_PUSH_CREDENTIALS), None
        try:
            headers = self._headers(run)
        except ValueError as exc:
            # A key missing or wrong on this replica (a rolling deploy, say) is this process's fault, not the
            # run's: retried, by this replica later or by another one that has the key.
            return dispatch.SendOutcome("retry", error=str(exc)), None
        try:
            # No redirect is followed (the client follows none): the push API answers itself, and a redirect (to
            # another host, or from http to https) is a configuration to fix, not a place to send an app's
            # credentials to. At most MAX_ANSWER_BYTES of the answer are read: an answer is a small JSON object,
            # and a push API that sends more must not cost this process its memory.
            answer = await self._client.post(
                wirejson.dumps(outgoing_push(run)), headers, timeout=self._timeout, max_answer_bytes=MAX_ANSWER_BYTES
            )
        except TimeoutError:
            return dispatch.SendOutcome("retry", error=f"timed out after {self._timeout}s"), None
        except pushclient.PushConnectionError as exc:
            return dispatch.SendOutcome("retry", error=f"connection error: {exc}"[:1000]), None
        text = answer.body.decode("utf-8", "replace")
        try:
            payload: Any = wirejson.loads(text)
        except ValueError:
            payload = text
        now = dt.datetime.now(dt.timezone.utc)
        return dispatch.classify_response(answer.status, payload, answer.headers.get("retry-after"), now), None
