"""Retry delays: capped exponential backoff with full jitter, a server's Retry-After as a floor."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from crisync.errors import CrisyncError

T = TypeVar("T")

# Past this many doublings the cap has long taken over; without a bound, 2 ** 1024 and more
# would not fit a float.
MAX_DOUBLINGS = 64


def full_jitter(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    floor: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before try `attempt + 1` (attempt counts from 1).

    Callers that retry for as long as it takes (the MQTT reconnect) reach any attempt count.
    """
    doublings = min(max(0, attempt - 1), MAX_DOUBLINGS)
    ceiling = min(cap, base * 2**doublings)
    delay = (rng or random).uniform(0, ceiling)
    return max(delay, floor or 0.0)


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    on_retry: Callable[[int, float, CrisyncError], None],
    base: float = 1.0,
    cap: float = 60.0,
    answers: tuple[type[CrisyncError], ...] = (),
) -> T:
    """Run `operation`, retrying its retriable failures with backoff; the last failure is raised.

    `answers` are failures that tell the caller something (e.g. Pure's 409 "already
    locked"): raised at once, retriable or not, for the caller to act on.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except CrisyncError as exc:
            if not exc.retriable or isinstance(exc, answers) or attempt == attempts:
                raise
            delay = full_jitter(attempt, base=base, cap=cap, floor=exc.retry_after)
            on_retry(attempt, delay, exc)
            await asyncio.sleep(delay)
    raise ValueError("attempts must be at least 1")
