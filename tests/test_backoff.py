"""Retry delays: capped exponential backoff with full jitter."""

from __future__ import annotations

import random

from crisync.backoff import full_jitter


def test_the_delay_stays_under_its_cap_however_many_attempts_went_before() -> None:
    rng = random.Random(1)
    # A broker down for days: the publisher's attempts run into the thousands.
    delays = [full_jitter(attempt, base=1.0, cap=30.0, rng=rng) for attempt in (1, 64, 5000)]
    assert all(0 <= delay <= 30.0 for delay in delays)
    assert full_jitter(1, base=1.0, cap=30.0, rng=rng) <= 1.0
