"""What the Elements tests share: settings changed from the test configuration, a listener
built from them, another simulator served on its own, what the state holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp

from crisync.config.model import Config
from crisync.lifecycle import Lifecycle
from crisync.listener.base import SourceContext
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.config import ElementsConfig
from crisync.listener.elements.feed import ElementsListener
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.server import serve
from crisync.state import cursors
from crisync.state.cursors import Cursor
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.secrets import ELEMENTS_PASSWORD

# A whole second: the HTTP Date (whole seconds) at the start equals the simulator's clock.
START = datetime(2026, 11, 2, 9, 30, 15, tzinfo=UTC)


def elements_settings(config: Config, **changes: object) -> ElementsConfig:
    """The fixture's Elements settings, changed by `changes`."""
    assert config.elements is not None
    return ElementsConfig(
        **{
            **config.elements.model_dump(),
            **changes,
            "password": changes.get("password", config.elements.password),
        }
    )


def listener_with(
    session: aiohttp.ClientSession,
    config: Config,
    store: Store,
    *,
    telemetry: Telemetry | None = None,
    stopping: asyncio.Event | None = None,
    **changes: object,
) -> ElementsListener:
    """A listener whose Elements settings differ from the fixture's by `changes`."""
    settings = elements_settings(config, **changes)
    telemetry = telemetry or Telemetry()
    life = Lifecycle(stopping=stopping or asyncio.Event())
    context = SourceContext(store, session, life, telemetry)
    return ElementsListener(
        settings, ElementsClient(session, settings, telemetry=telemetry), context
    )


async def cursor_of(store: Store, feed: str) -> Cursor:
    async with store.reading() as conn:
        return await cursors.get(conn, feed)


async def pending(store: Store) -> list[tuple[str, str, str, str]]:
    """(kind, key, action, changed_at) of every pending inbox event, oldest first."""
    async with (
        store.reading() as conn,
        conn.execute(
            "SELECT kind, key, action, changed_at FROM inbox WHERE state = 'pending' ORDER BY id"
        ) as rows,
    ):
        return [(row[0], row[1], row[2], row[3]) async for row in rows]


def simulator(**options: Any) -> ElementsSimulator:
    """A simulator of its own, for tests that need one built differently."""
    return ElementsSimulator(
        **{"objects": 10, "seed": 5, "password": ELEMENTS_PASSWORD, "start": START, **options}
    )


@asynccontextmanager
async def served(sim: ElementsSimulator) -> AsyncIterator[str]:
    """The API URL of another simulator, for tests that need one built differently."""
    async with serve(sim.app()) as origin:
        yield origin + "/secure-api/v5.5"
