"""Pacing of every request to Pure: its three limits, its Retry-After, backfill's share.

Pure throttles the whole site by requests per second, requests in flight and an hourly
quota. Each request here waits, in this order, for: the end of a Retry-After pause (one
answer pauses every request: the limit is the site's), room in the quota of the last hour,
a free slot under `concurrency`, then its turn under `rate_limit` (so that a request given
its turn goes at once). A request counts against the quota from the moment it is let
through, so none is ever sent beyond it. Without a quota or a rate limit (and no pause),
a request waits for its slot alone.

Backfill work (`throttle.backfill_work`) leaves `changes_share` of the rate and of the quota to
ordinary changes: it waits at (1 - share) of either, changes only at the whole of it.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta

import structlog

from crisync.handlers.pure.config import PureConfig
from crisync.handlers.throttle import (
    BackfillHold,
    BackfillWindow,
    Clock,
    QuotaFigures,
    SystemClock,
    backfill_work,
)
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.pure")

QUOTA_PERIOD = 3600  # seconds: the quota is per rolling hour
# Requests are counted per second; one leaves the hour a second late rather than early.
BUCKET = 1
# A request reaches Pure a little after its turn here, the next may reach it sooner: the
# rate's window is this much longer than a second, so that Pure never counts one too many.
RATE_MARGIN = 0.05


class PurePacing:
    def __init__(
        self, config: PureConfig, *, telemetry: Telemetry, clock: Clock | None = None
    ) -> None:
        self._clock = clock or SystemClock()
        self._telemetry = telemetry
        self._quota = config.hourly_quota
        self._window = (
            None if config.backfill_window is None else BackfillWindow.parse(config.backfill_window)
        )
        self._retry_after_cap = config.retry_after_cap
        reserved = config.changes_share if config.rate_limit or config.hourly_quota else 0.0
        self._share = reserved
        # Backfill's part of the quota: it leaves at least the changes' share untouched.
        self._backfill_quota = (
            None if self._quota is None else max(1, math.floor(self._quota * (1 - reserved)))
        )
        self._slots = asyncio.Semaphore(config.concurrency)
        rate = config.rate_limit
        self._pace = None if rate is None else SlidingRate(rate, self._clock)
        self._backfill_pace = (
            None
            if rate is None or not reserved
            else SlidingRate(rate * (1 - reserved), self._clock)
        )
        self._sent: deque[list[int]] = deque()  # [second, requests let through in it], oldest first
        self._used = 0
        self._spent_since: float | None = None  # monotonic, while a request waits for the quota
        self._paused_until = 0.0  # monotonic end of the last Retry-After pause
        self._report()

    def turn(self) -> AbstractAsyncContextManager[object]:
        """Held while one request is sent."""
        if self._quota is None and self._pace is None and not self._paused():
            return self._slots  # only the concurrency to keep: the hot path of most sites
        return self._paced_turn()

    @asynccontextmanager
    async def _paced_turn(self) -> AsyncIterator[None]:
        backfill = backfill_work.get()
        await self._pause_over()
        await self._quota_room(self._backfill_quota if backfill else self._quota)
        # The slot first: a request that got its turn under the rate goes at once.
        async with self._slots:
            if backfill and self._backfill_pace is not None:
                await self._backfill_pace.turn()
            if self._pace is not None:
                await self._pace.turn()
            yield

    def throttled(self, status: int, retry_after: float | None, what: str) -> float | None:
        """Pure answered 429 or 503 with Retry-After: every request pauses that long, capped.

        Returns the wait the answer's failure carries (its retry floor)."""
        if retry_after is None:
            return None
        wait = min(retry_after, self._retry_after_cap)
        if retry_after > self._retry_after_cap:
            log.warning(
                "pure.retry_after_capped",
                request=what,
                status=status,
                retry_after=retry_after,
                waiting=wait,
                detail="Pure asked for a longer pause than [pure] retry_after_cap allows",
            )
        self._paused_until = max(self._paused_until, self._clock.monotonic() + wait)
        return wait

    # ------------------------------------------------------------------ what others ask

    def spent(self) -> bool:
        return self._quota is not None and self._used_now() >= self._quota

    def backfill_waits(self) -> BackfillHold | None:
        if self._window is not None and not self._window.contains(self._clock.local_now()):
            return BackfillHold(f"outside the backfill window {self._window} (local time)", True)
        if self._backfill_quota is not None and self._used_now() >= self._backfill_quota:
            return BackfillHold(
                f"backfill's part of the hourly quota is spent ({self._backfill_quota} of "
                f"{self._quota}; the rest is kept for changes)",
                False,
            )
        return None

    def changes_share(self) -> float:
        return self._share

    def figures(self) -> QuotaFigures:
        used = self._used_now()
        refills_at = None
        if self._quota is not None and used >= self._quota and self._sent:
            refills_at = self._clock.local_now() + timedelta(seconds=self._refill_wait())
        return QuotaFigures(self._quota, used, refills_at, self.backfill_waits())

    def seed(self, used: int, at: datetime) -> None:
        age = (self._clock.local_now() - at).total_seconds()
        if used <= 0 or age >= QUOTA_PERIOD or self._sent:
            return  # nothing to count, or this process counts its own already
        second = math.floor(self._clock.monotonic() - max(age, 0.0))
        self._sent.appendleft([second, used])
        self._used += used
        self._report()

    # ------------------------------------------------------------------ the waits

    def _paused(self) -> bool:
        return self._paused_until > self._clock.monotonic()

    async def _pause_over(self) -> None:
        while (left := self._paused_until - self._clock.monotonic()) > 0:
            await self._clock.sleep(left)

    async def _quota_room(self, limit: int | None) -> None:
        """Wait until a request fits `limit` in the last hour, and count it there."""
        if self._quota is None or limit is None:
            return
        while self._used_now() >= limit:
            if self._spent_since is None and limit == self._quota:
                self._spent_since = self._clock.monotonic()
                log.warning(
                    "pure.quota_spent",
                    hourly_quota=self._quota,
                    refills_in=round(self._refill_wait(), 1),
                    detail="Pure work waits, keeping its attempts, until requests of the last "
                    "hour leave it",
                )
            await self._clock.sleep(self._refill_wait())
        if self._spent_since is not None and limit == self._quota:
            log.info(
                "pure.quota_refilled",
                hourly_quota=self._quota,
                waited=round(self._clock.monotonic() - self._spent_since, 1),
            )
            self._spent_since = None
        second = math.floor(self._clock.monotonic())
        if self._sent and self._sent[-1][0] == second:
            self._sent[-1][1] += 1
        else:
            self._sent.append([second, 1])
        self._used += 1
        self._report()

    def _used_now(self) -> int:
        """Requests let through in the last hour (whole seconds, rounded to count more)."""
        now = self._clock.monotonic()
        expired = False
        while self._sent and self._sent[0][0] + BUCKET + QUOTA_PERIOD <= now:
            self._used -= self._sent.popleft()[1]
            expired = True
        if expired:
            self._report()
        return self._used

    def _refill_wait(self) -> float:
        """Seconds until the oldest requests counted leave the hour."""
        if not self._sent:
            return 0.0
        return max(self._sent[0][0] + BUCKET + QUOTA_PERIOD - self._clock.monotonic(), 0.001)

    def _report(self) -> None:
        if self._quota is not None:
            self._telemetry.quota("pure", self._quota, max(self._quota - self._used, 0))


class SlidingRate:
    """At most `rate` requests in any window of a second (strict: no burst beyond it).

    A rate below one allows one request per 1/rate seconds; a fractional rate above one
    allows its whole part per second.
    """

    def __init__(self, rate: float, clock: Clock) -> None:
        self._clock = clock
        self._count = max(1, math.floor(rate))
        self._period = max(1.0, 1.0 / rate) + RATE_MARGIN
        self._sent: deque[float] = deque(maxlen=self._count)  # monotonic, the latest turns

    async def turn(self) -> None:
        while (
            len(self._sent) == self._count
            and (wait := self._sent[0] + self._period - self._clock.monotonic()) > 0
        ):
            await self._clock.sleep(wait)
        self._sent.append(self._clock.monotonic())
