"""The one lifecycle object every loop receives: how the loops wake each other and hand over on
the way down (SIGTERM: stop polling, finish what is in flight, drain the outbox, exit)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Lifecycle:
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # stop polling, finish in-flight
    feeds_done: asyncio.Event = field(default_factory=asyncio.Event)  # no listener will add work
    # no handler will add outcomes: the feed status and the commands stop after this
    handlers_done: asyncio.Event = field(default_factory=asyncio.Event)
    # no loop will add to the outbox: the handlers, the feed status and the commands are done
    outbox_closed: asyncio.Event = field(default_factory=asyncio.Event)
    work_ready: asyncio.Event = field(default_factory=asyncio.Event)  # inbox has new events
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)  # outbox has new rows

    async def wait_stopping(self, seconds: float) -> bool:
        """Sleep up to `seconds`, less when told to stop; True when stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def wait_next_round(self, started: float, interval: float) -> bool:
        """Sleep until `interval` seconds after `started` (a time.monotonic()), at once when
        that has passed: a poll starts every interval, not an interval after the last one
        ended, so a change waits at most the interval to be read. True when stopping."""
        return await self.wait_stopping(max(0.0, started + interval - time.monotonic()))
