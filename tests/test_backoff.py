from __future__ import annotations

import random

from crisync.backoff import full_jitter


class Highest(random.Random):
    """Jitter that always picks the top of the range, so that the ceiling shows."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_delay_doubles_up_to_the_cap() -> None:
    ceilings = [full_jitter(attempt, base=1.0, cap=30.0, rng=Highest()) for attempt in range(1, 8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_an_attempt_count_beyond_what_a_float_holds_keeps_the_cap() -> None:
    # The MQTT reconnect loop retries for as long as the broker is down: 2 ** 1024 once
    # overflowed there and ended the daemon.
    for attempt in (1025, 10**6):
        assert full_jitter(attempt, base=1.0, cap=30.0, rng=Highest()) == 30.0
