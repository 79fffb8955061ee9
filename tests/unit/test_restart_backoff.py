"""The supervisor's rules for a dying worker (service.workers): when to restart it, on explicit lives and
deaths, and when its end was a failed start or the stop asked for."""

from __future__ import annotations

import signal

import pytest

from service import workers
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


def test_a_worker_told_to_stop_stopped_as_asked_when_it_drained_or_died_of_the_signal_itself() -> None:
    # SIGTERM from the parent, or a terminal's Ctrl-C reaching the whole process group, before the worker
    # had handlers of its own: it held nothing yet.
    assert workers.stopped_as_asked(0)
    assert workers.stopped_as_asked(-signal.SIGTERM)
    assert workers.stopped_as_asked(-signal.SIGINT)
    assert not workers.stopped_as_asked(-signal.SIGKILL)  # killed at the deadline: it had not drained
    assert not workers.stopped_as_asked(1)


def test_a_first_life_failed_to_start_when_the_worker_says_so_or_died_before_posting_anything() -> None:
    assert workers.failed_to_start(workers.EXIT_NOT_STARTED, "draining")  # its cleanup posted "draining"
    assert workers.failed_to_start(1, "starting")  # an import failing: it never posted
    assert not workers.failed_to_start(1, "ready")  # it served, then crashed: restarted
    assert not workers.failed_to_start(-signal.SIGKILL, "starting")  # killed from outside: restarted
