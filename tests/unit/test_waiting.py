"""tests/waiting.py: `eventually` returns as soon as its condition holds, and says what never did."""

from __future__ import annotations

import time

import pytest

from tests.waiting import eventually


async def test_returns_the_first_truthy_value() -> None:
    answers = iter([0, [], "third"])

    async def third_time_lucky() -> object:
        return next(answers)

    assert await eventually(third_time_lucky, interval=0.001) == "third"


async def test_fails_naming_the_condition_and_its_last_value() -> None:
    async def never() -> list[int]:
        return []

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"not true within 0.05 s: nothing arrived \(last value: \[\]\)"):
        await eventually(never, timeout=0.05, interval=0.01, what="nothing arrived")
    assert 0.05 <= time.monotonic() - started < 2.0


async def test_a_deadline_already_past_asks_once() -> None:
    calls = 0

    async def counted() -> bool:
        nonlocal calls
        calls += 1
        return calls > 1

    with pytest.raises(AssertionError):
        await eventually(counted, timeout=-1.0)
    assert calls == 1
