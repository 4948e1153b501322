"""Waiting for a state that announces itself with no event: a database row, a log line."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], bool | Awaitable[bool]], within: float = 10, step: float = 0.05
) -> None:
    async with asyncio.timeout(within):
        while True:
            met = condition()
            if await met if inspect.isawaitable(met) else met:
                return
            await asyncio.sleep(step)
