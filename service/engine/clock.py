"""The database's clock, seen from this process.

Every decision about time (due, too late, a lease run out) is taken inside the database by clock_timestamp().
What is left to the process is waiting: to wake up before work is due and to hand a run to the sender at its
instant. It waits by its own clock, corrected by the offset to the database's clock measured on its round
trips, so a replica whose clock is seconds off still sends on the database's time, like every other replica.
"""

from __future__ import annotations

import datetime as dt
import time


class Clock:
    """Local time plus the measured offset to the database's clock; with no sample yet, local time."""

    # A sample from a round trip slower than this tells the offset only within half of it: ignored unless it is
    # all there is.
    GOOD_ROUND_TRIP = 0.02

    def __init__(self) -> None:
        self._offset = 0.0  # database minus local, seconds
        self._best_round_trip = float("inf")

    @property
    def offset(self) -> float:
        return self._offset

    def local(self) -> float:
        """This process's own clock, epoch seconds (time.time())."""
        return time.time()

    def observe(self, sent_at: float, database_now: dt.datetime, received_at: float) -> None:
        """One round trip: local() when it was sent and when it was answered, and the database's instant."""
        round_trip = max(0.0, received_at - sent_at)
        if round_trip > max(self.GOOD_ROUND_TRIP, self._best_round_trip * 2):
            return
        self._best_round_trip = min(self._best_round_trip, round_trip)
        self._offset = database_now.timestamp() - (sent_at + received_at) / 2

    def now(self) -> float:
        """The database's epoch seconds, now."""
        return self.local() + self._offset

    def seconds_until(self, instant: dt.datetime | float) -> float:
        """Seconds from now to `instant` on the database's clock (negative when past)."""
        epoch = instant if isinstance(instant, float) else instant.timestamp()
        return epoch - self.now()
