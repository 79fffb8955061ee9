"""service.domain.wirejson: orjson's speed, never at the cost of a value."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.domain import wirejson

VALUES: list[Any] = [
    {"a": [1, 2.5, None, True, "ünïcödé ✓ 日本"], "b": {"c": -0.0}},
    {"big": 10**30, "negative": -(10**25), "edge": 2**64 - 1, "min": -(2**63)},
    {"digits in a string": "1234567890123456789012345", "float": 1e300},
    "text",
    [],
]


@pytest.mark.parametrize("value", VALUES)
def test_a_value_comes_back_exactly(value: Any) -> None:
    text = wirejson.dumps_text(value)
    assert wirejson.loads(text) == value
    assert wirejson.loads(text.encode()) == value
    assert json.loads(text) == value  # and any JSON reader reads the same


def test_integers_past_64_bits_are_encoded_and_decoded_exactly() -> None:
    assert wirejson.dumps({"n": 10**30}) == b'{"n":1000000000000000000000000000000}'
    decoded = wirejson.loads('{"n": 123456789012345678901234567890}')
    assert decoded["n"] == 123456789012345678901234567890 and isinstance(decoded["n"], int)


def test_non_ascii_is_written_as_is_and_compact() -> None:
    assert wirejson.dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()


def test_text_orjson_refuses_is_read_as_json_reads_it() -> None:
    """A push API's answer may escape a lone surrogate, which orjson refuses and `json` reads."""
    assert wirejson.loads('{"msg_id": "id-1\\u0000\\ud800"}') == {"msg_id": "id-1\x00\ud800"}
    assert wirejson.loads(b'{"msg_id": "\\ud800"}') == {"msg_id": "\ud800"}
    with pytest.raises(ValueError, match="Expecting value"):
        wirejson.loads("not json")
