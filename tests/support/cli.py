"""The command line as a user runs it, from a test's event loop."""

from __future__ import annotations

import asyncio

from crisync.cli import main


async def cli(*args: str) -> int:
    """The command; in a thread, since it runs its own event loop."""
    return await asyncio.to_thread(main, list(args))
