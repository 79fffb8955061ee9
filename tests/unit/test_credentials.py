"""Parsing the Basic Authorization header: anything malformed is None (a 401), never an exception (a 500)."""

from __future__ import annotations

import base64

import pytest

from service.domain import credentials


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_a_well_formed_header() -> None:
    assert credentials.parse_basic(basic(b"key:secret:with:colons")) == ("key", "secret:with:colons")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Bearer abc",
        "Basic !!!",
        "Basic \xe9\xe9",  # latin-1 bytes, as aiohttp hands them over
        "Basic \udce9",  # undecodable bytes, surrogate-escaped
        "Basic é",
        basic(b"no-colon"),
        basic(b":secret-only"),
        basic(b"key-only:"),
        basic(b"\xe9:\xff"),  # not UTF-8 once decoded
    ],
)
def test_malformed_headers_are_none(header: str | None) -> None:
    assert credentials.parse_basic(header) is None
