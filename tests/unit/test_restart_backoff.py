"""The supervisor's restart rule for a dying worker (service.workers), on explicit lives and deaths."""

from __future__ import annotations

import pytest

from service.workers import (
    RESTART_FIRST_SECONDS,
    RESTART_MAX_SECONDS,
    STEADY_SECONDS,
    restart_delay,
    young_deaths_after,
)


def delays_for(lives: list[float]) -> list[float]:
    """The delay before each restart, for a worker that died after each of these lives, in order."""
    young_deaths, delays = 0, []
    for lived in lives:
        young_deaths = young_deaths_after(young_deaths, lived)
        delays.append(restart_delay(young_deaths))
    return delays


def test_a_crash_loop_doubles_the_wait_up_to_the_max() -> None:
    assert (RESTART_FIRST_SECONDS, RESTART_MAX_SECONDS, STEADY_SECONDS) == (0.5, 30.0, 30.0)
    assert delays_for([0.2] * 9) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_healthy_life_starts_the_count_again() -> None:
    # Three young deaths, then a worker that lived its STEADY_SECONDS: back to the first wait.
    assert delays_for([1.0, 1.0, 1.0, STEADY_SECONDS, 1.0, 29.9]) == [0.5, 1.0, 2.0, 0.5, 0.5, 1.0]


def test_a_worker_that_was_healthy_is_restarted_at_once() -> None:
    assert delays_for([3600.0]) == [RESTART_FIRST_SECONDS]


@pytest.mark.parametrize("young_deaths", [1_025, 10**6])
def test_a_crash_loop_of_any_length_keeps_the_max(young_deaths: int) -> None:
    # 2 ** 1024 does not convert to a float: without a cap on the exponent, hours of a crash loop would end in
    # an OverflowError in the supervisor itself.
    assert restart_delay(young_deaths) == RESTART_MAX_SECONDS
