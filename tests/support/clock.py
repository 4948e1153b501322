"""A clock for throttling tests: it moves only when the test moves it, so an hour's wait takes
as long as the test wants, and what waits meanwhile can be looked at."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta


class FakeClock:
    def __init__(self, local: datetime) -> None:
        self.now = 1000.0  # monotonic seconds
        self._local_at_start = local
        self._start = self.now
        self._moved = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    def local_now(self) -> datetime:
        return self._local_at_start + timedelta(seconds=self.now - self._start)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._moved.set()
        self._moved = asyncio.Event()

    def set_local(self, local: datetime) -> None:
        """Another time of day (a window opening), the monotonic clock left as it is."""
        self._local_at_start = local - timedelta(seconds=self.now - self._start)

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self.now < until:
            await self._moved.wait()
