"""The Unicat source: a project's sync stream (records and the jobs Unicat reports)."""

from __future__ import annotations

import aiohttp

from crisync.listener.base import Loop, Source, SourceContext
from crisync.listener.unicat.client import UnicatClient
from crisync.listener.unicat.config import UnicatConfig
from crisync.listener.unicat.feed import UnicatListener
from crisync.telemetry import Telemetry


async def check_unicat(
    config: UnicatConfig, session: aiohttp.ClientSession, telemetry: Telemetry
) -> str:
    """Sign in with the API key and ask for the start of the project's sync stream."""
    await UnicatClient(session, config, telemetry=telemetry).sync_get(0, 0)
    return f"the API key signs in to project {config.project} and reads its sync stream"


class UnicatSource(Source):
    name = "unicat"

    def __init__(self, config: UnicatConfig, context: SourceContext) -> None:
        self.config = config
        self._context = context
        self.client = UnicatClient(context.session, config, telemetry=context.telemetry)

    def kinds(self) -> frozenset[str]:
        return self.config.kinds()

    def loops(self, *, once: bool) -> list[Loop]:
        listener = UnicatListener(self.config, self.client, self._context)

        async def poll_once() -> None:
            await listener.poll()

        return [
            Loop(listener.loop_name, listener.beat_deadline, poll_once if once else listener.run)
        ]
