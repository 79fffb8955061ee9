"""The authentication cache: hits, remembered unknown keys, expiry and its size bound."""

from __future__ import annotations

import datetime as dt
import time

from service.api import keys
from service.domain import types

APP = types.App(types.AppKey("k"), "app", "UTC", 1000, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))


def test_found_and_unknown_keys_are_both_remembered() -> None:
    cache = keys.CredentialCache(ttl_seconds=60)
    assert cache.get("k") == (False, None)
    cache.put("k", (APP, b"digest"))
    cache.put("nope", None)
    assert cache.get("k") == (True, (APP, b"digest"))
    assert cache.get("nope") == (True, None)  # a wrong key takes the same path as a wrong secret


def test_entries_expire() -> None:
    cache = keys.CredentialCache(ttl_seconds=0.05)
    cache.put("k", (APP, b"digest"))
    time.sleep(0.06)  # the TTL running out is the event under test, not something to wait for
    assert cache.get("k") == (False, None)


def test_size_is_bounded() -> None:
    cache = keys.CredentialCache(ttl_seconds=60, max_entries=3)
    for key in ("a", "b", "c", "d"):
        cache.put(key, None)
    assert cache.get("d") == (True, None)
    assert cache.get("a") == (False, None)
