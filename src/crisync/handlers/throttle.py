"""What a target's throttling tells the dispatcher: whether its quota is spent, whether backfill
work may run now, and how much of the handlers backfill leaves to ordinary changes.

Backfill work is the bulk a first pass, a re-read of a whole stream or `resync --all` queues
(inbox rows marked so); everything else is an ordinary change. The dispatcher says which kind
of work a handler does through `backfill_work`, so that the target's client paces each kind
to its share without every handler passing it down.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock_time
from typing import Protocol

# Set by the dispatcher around each handler (a context variable: each worker task has its own).
backfill_work: ContextVar[bool] = ContextVar("crisync_backfill_work", default=False)


@dataclass(frozen=True)
class BackfillWindow:
    """Hours of the host's local day when backfill may run; it may span midnight."""

    start: clock_time
    end: clock_time

    @classmethod
    def parse(cls, text: str) -> BackfillWindow:
        """ "22:00-06:00" → 22:00 until 06:00 the next morning."""
        try:
            start, end = (clock_time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f'{text!r}: expected "HH:MM-HH:MM", e.g. "22:00-06:00"') from None
        if start == end:
            raise ValueError(f"{text!r}: an empty window (leave the key out for any time)")
        return cls(start, end)

    def contains(self, moment: datetime) -> bool:
        at = moment.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


class Clock(Protocol):
    """The time a throttle goes by; tests give one that does not make them wait."""

    def monotonic(self) -> float: ...

    def local_now(self) -> datetime:
        """The host's local time, aware (the backfill window is in it)."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def local_now(self) -> datetime:
        return datetime.now().astimezone()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class BackfillHold:
    """Why backfill work may not start now."""

    reason: str
    # Outside the backfill window: `crisync once` leaves the backfill for a later run
    # (else, its share of the quota spent, it waits for the hour to refill it).
    outside_window: bool


@dataclass(frozen=True)
class QuotaFigures:
    """One moment of a throttle, for status, metrics and the next start."""

    limit: int | None  # requests in any rolling hour; None: no quota
    used: int  # requests in the last hour
    refills_at: datetime | None  # when the spent quota lets a request go again; None: not spent
    backfill_waits: BackfillHold | None  # why backfill work waits now; None: it may run

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


class Throttle(Protocol):
    def spent(self) -> bool:
        """Whether the quota is spent: the API's work waits, untried, until it refills."""

    def backfill_waits(self) -> BackfillHold | None:
        """Why backfill work may not start now (outside its window, its share spent), or None."""

    def changes_share(self) -> float:
        """The share of the handlers backfill leaves to ordinary changes (0: none kept)."""

    def figures(self) -> QuotaFigures: ...

    def seed(self, used: int, at: datetime) -> None:
        """Requests a previous run recorded (`used` in the hour before `at`): counted as sent
        at `at`, which keeps a restart within the quota."""
