"""JSON on the hot paths (answers, and the jsonb columns asyncpg reads and writes) through orjson, with the
standard library where orjson would change a value.

orjson encodes and decodes several times faster than `json` (bench/README "orjson": the detail GET from 0.86 to
0.95 of the bare handler, a list page +56%). It differs from `json` on one kind of value this service keeps:
integers past 64 bits. A push may carry any JSON number, and is stored and sent as the client sent it, so:
- encoding such an integer, orjson refuses: `json` encodes it instead;
- decoding, orjson would turn it into a float (precision lost): text with a run of 20 or more digits (every
  integer past 64 bits has one) is decoded by `json` instead. Such text is rare (a long digit string inside a
  string value takes the same, slower, path, with the same result). Text orjson refuses (an escaped lone
  surrogate, which `json` reads) is decoded by `json` too.
Request bodies are still read by `json` (service.api.handlers): its errors name what is wrong, and a body is
read once.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Integers past 64 bits have at least 20 digits (2**64 has 20).
_LONG_DIGITS = re.compile(r"[0-9]{20}")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, non-ASCII as is."""
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer past 64 bits (orjson.JSONEncodeError is a TypeError)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def dumps_text(value: Any) -> str:
    return dumps(value).decode("utf-8")


def loads(text: str | bytes) -> Any:
    """The value of JSON text, every integer exact."""
    probe = text.decode("utf-8") if isinstance(text, bytes) else text
    if _LONG_DIGITS.search(probe):
        return json.loads(probe)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson refuses some text `json` reads, such as an escaped lone surrogate ("\\ud800") that a push API
        # may put in a msg_id: `json` decides, and raises its own ValueError on text that is not JSON at all.
        return json.loads(probe)
