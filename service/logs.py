"""Logging set-up, installed by `cli.main()` (never at import): one JSON object per line.

Every record becomes `{"ts", "level", "logger", "message", ...}` plus the fields its call passed through
`extra=` (a request's method, route, status, ms and app key; a dispatch's schedule and run ids, wave,
lateness, outcome and attempt), so log pipelines filter on fields instead of parsing sentences.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Literal, TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Fields(logging.Filter):
    """Adds the same fields to every record (a worker's number and pid)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__()
        self._fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self._fields.items():
            setattr(record, key, value)
        return True


def install(
    level: str, stream: TextIO, style: Literal["json", "text"] = "json", fields: dict[str, Any] | None = None
) -> None:
    """Send every log record to `stream`, one line each, replacing any handler installed before; `fields` are
    added to every line."""
    handler = logging.StreamHandler(stream)
    text_format = TEXT_FORMAT if not fields else TEXT_FORMAT.replace("%(name)s", "worker %(worker)s %(name)s")
    handler.setFormatter(JsonFormatter() if style == "json" else logging.Formatter(text_format))
    if fields:
        handler.addFilter(_Fields(fields))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
