"""Retry delays: capped exponential backoff with full jitter, a server's Retry-After as a floor."""

from __future__ import annotations

import random


def full_jitter(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    floor: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before try `attempt + 1` (attempt counts from 1)."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    delay = (rng or random).uniform(0, ceiling)
    return max(delay, floor or 0.0)
