"""A client of the asynchronous polling pattern, in Python's standard library alone.

It does what the C# example of iSchedule's polling URL does: POST the URL, read `Location` and `Retry-After`
from the 202, wait, GET `Location`, and repeat while the answer is 202; the 200 body is the run's outcome.
A fire-and-forget URL's 200 (`{"run_id": ...}`) is returned as it is. See docs/api.md, "Polling a run".

    python examples/poll_client.py http://127.0.0.1:8080/hooks/whk_.../poll --params '{"order": "1042"}'
    python examples/poll_client.py http://127.0.0.1:8080/v4/schedules/$ID/run --user "$APP_KEY:$SECRET"

`--params` is what goes under `QueryParameters`: one parameter set (an object), or a list of them.
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from email.message import Message
from typing import Any

# When a 202 carries no Retry-After the client can read: the C# example's default.
DEFAULT_RETRY_AFTER = 30.0
USER_AGENT = "poll_client/1.0 (push-schedule-service example)"


class ErrorResponse(Exception):
    """The service answered 4xx or 5xx. `body` is the error envelope (`{"error": {"code", "message"}}`) when the
    answer was JSON, else its text; `retry_after` is the answer's Retry-After in seconds (429, 503), if any."""

    def __init__(self, method: str, url: str, status: int, body: Any, retry_after: float | None) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.retry_after = retry_after
        shown = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        super().__init__(f"{method} {url}: HTTP {status}: {shown}")

    @property
    def code(self) -> int | None:
        """The envelope's code (28100, 28104, 28409, 28429, ...), when there is one."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return code if isinstance(code, int) else None
        return None


class PollTimeout(Exception):
    """The run had not ended within the timeout. `status` is its last in-progress status."""

    def __init__(self, url: str, timeout: float, status: dict[str, Any]) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: the run had not ended after {timeout:g} s (last status: {json.dumps(status)})")


def follow(
    url: str,
    *,
    body: dict[str, Any] | None = None,
    auth: tuple[str, str] | None = None,
    idempotency_key: str | None = None,
    timeout: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """POST `url` and follow the polling pattern to the run's outcome.

    `body`: the parameters body (`{"QueryParameters": ...}`), or None for none. `auth`: (app_key, master_secret)
    for the `/v4/` URLs; sent only to the origin of `url`, never to another host a Location might name.
    `idempotency_key`: sent as the Idempotency-Key header, so a POST resent after a lost answer starts no second
    run. `timeout`: seconds for the whole exchange; past it, PollTimeout. `sleep`: how to wait between polls.

    Returns the final JSON object: the 200 of a status URL (the outcome), or a fire-and-forget 200 as it is.
    Raises ErrorResponse on a 4xx or 5xx, with its status and body; PollTimeout past `timeout`; ValueError on an
    answer this service would not give (a 202 without Location, a body that is not a JSON object); and
    urllib.error.URLError when the service cannot be reached.
    """
    started = time.monotonic()
    slept = 0.0

    def elapsed() -> float:
        # Both clocks: a real sleep shows in time.monotonic(), an injected one (a test's) only in `slept`.
        return max(time.monotonic() - started, slept)

    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if auth is not None:
        user, secret = auth
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
    post_headers = dict(headers)
    if idempotency_key is not None:
        post_headers["Idempotency-Key"] = idempotency_key
    data = b""
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        post_headers["Content-Type"] = "application/json"

    status, answer_headers, answer = _exchange("POST", url, post_headers, data, _left(timeout, elapsed()))
    if status != 202:
        return answer  # fire-and-forget: 200 {"run_id": ...}
    location = answer_headers.get("Location")
    if not location:
        raise ValueError(f"POST {url}: a 202 without a Location header")
    location = urllib.parse.urljoin(url, location)  # a path (no PUBLIC_BASE_URL) is relative to the URL posted to
    # Credentials go only where they came from: never to another host a Location might name.
    poll_headers = headers if _same_origin(location, url) else _without_credentials(headers)
    while True:
        wait = _retry_after(answer_headers)
        wait = DEFAULT_RETRY_AFTER if wait is None else wait
        if elapsed() + wait > timeout:
            raise PollTimeout(location, timeout, answer)
        sleep(wait)
        slept += wait
        status, answer_headers, answer = _exchange("GET", location, poll_headers, None, _left(timeout, elapsed()))
        if status != 202:
            return answer  # 200: the outcome, the same on every later poll


def _exchange(
    method: str, url: str, headers: Mapping[str, str], data: bytes | None, timeout: float
) -> tuple[int, Message, dict[str, Any]]:
    """One request: its status, headers (looked up in any letter case) and JSON object. A 4xx or 5xx raises
    ErrorResponse."""
    request = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            answer_headers: Message = response.headers
            raw: bytes = response.read()
    except urllib.error.HTTPError as error:  # urllib raises for 4xx and 5xx; a 2xx, 202 included, comes back
        raw = error.read()
        raise ErrorResponse(method, url, error.code, _decoded(raw), _retry_after(error.headers)) from None
    answer = _decoded(raw)
    if not isinstance(answer, dict):
        raise ValueError(f"{method} {url}: HTTP {status} with a body that is not a JSON object: {answer!r:.200}")
    return status, answer_headers, answer


def _decoded(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _retry_after(headers: Message) -> float | None:
    """Retry-After in seconds: delta-seconds (what the service sends) or an HTTP date; None when absent or
    unreadable."""
    value = str(headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _same_origin(a: str, b: str) -> bool:
    first, second = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (first.scheme, first.netloc) == (second.scheme, second.netloc)


def _without_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "Authorization"}


def _left(timeout: float, elapsed: float) -> float:
    """A request's own timeout: what is left of the whole, at least 1 s, at most 60 s."""
    return min(60.0, max(1.0, timeout - elapsed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="POST a run URL (run now, or a webhook URL) and poll its Location until the run has ended."
    )
    parser.add_argument("url", help="e.g. http://127.0.0.1:8080/hooks/whk_.../poll")
    parser.add_argument("--user", metavar="KEY:SECRET", help="Basic auth for /v4/ URLs: app_key:master_secret")
    parser.add_argument(
        "--params", metavar="JSON", help='the QueryParameters: an object ({"order": "1042"}) or a list of them'
    )
    parser.add_argument("--idempotency-key", metavar="K", help="sent as Idempotency-Key")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole exchange (300)")
    args = parser.parse_args(argv)

    auth: tuple[str, str] | None = None
    if args.user is not None:
        user, colon, secret = args.user.partition(":")
        if not colon:
            parser.error("--user must be KEY:SECRET")
        auth = (user, secret)
    body: dict[str, Any] | None = None
    if args.params is not None:
        try:
            body = {"QueryParameters": json.loads(args.params)}
        except ValueError as error:
            parser.error(f"--params is not JSON: {error}")
    try:
        outcome = follow(args.url, body=body, auth=auth, idempotency_key=args.idempotency_key, timeout=args.timeout)
    except (ErrorResponse, PollTimeout, ValueError, urllib.error.URLError) as error:
        print(error, file=sys.stderr)  # noqa: T201
        return 1
    print(json.dumps(outcome, indent=2, ensure_ascii=False))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
