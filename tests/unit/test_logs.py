"""The JSON log formatter: one object per line, with the fields a call passed through `extra=`."""

from __future__ import annotations

import io
import json
import logging
import sys

from service import logs


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("service.engine.dispatcher", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_fields_and_extras_on_one_line() -> None:
    line = logs.JsonFormatter().format(
        record("dispatch %s\nsecond line", "x", event="dispatch", run_id="r1", attempt=2, lateness_ms=1.5, wave=None)
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "service.engine.dispatcher"
    assert entry["message"] == "dispatch x\nsecond line"
    assert {key: entry[key] for key in ("event", "run_id", "attempt", "lateness_ms", "wave")} == {
        "event": "dispatch", "run_id": "r1", "attempt": 2, "lateness_ms": 1.5, "wave": None,
    }  # fmt: skip
    assert entry["ts"].endswith("+00:00")
    assert not {"args", "msg", "levelno", "pathname", "exc_info"} & set(entry)


def test_exceptions_and_odd_values_stay_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    failed.__dict__["when"] = object()  # not JSON: rendered with str()
    entry = json.loads(logs.JsonFormatter().format(failed))
    assert "ValueError: boom" in entry["exc"] and entry["when"].startswith("<object")


def test_install_replaces_handlers_and_sets_the_level() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        logs.install("warning", stream)
        logging.getLogger("service.test").info("dropped")
        logging.getLogger("service.test").warning("kept", extra={"event": "x"})
        logs.install("info", stream, "text")
        logging.getLogger("service.test").info("plain")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    first, second = stream.getvalue().splitlines()
    assert json.loads(first)["message"] == "kept" and json.loads(first)["event"] == "x"
    assert second.endswith("INFO service.test plain")
