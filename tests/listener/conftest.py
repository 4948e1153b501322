"""Listener fixtures: a real store, a session, listeners built from the test configuration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from crisync.config.model import Config, ElementsConfig
from crisync.listener.elements import ElementsClient, ElementsListener
from crisync.sim.elements import ElementsSimulator
from crisync.sim.server import serve
from crisync.state import cursors
from crisync.state.cursors import Cursor
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.conftest import ELEMENTS_PASSWORD

# A whole second: the HTTP Date (whole seconds) at the start equals the simulator's clock.
START = datetime(2026, 11, 2, 9, 30, 15, tzinfo=UTC)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """Retries without waiting; records the Retry-After floor each retry was given."""
    floors: list[float | None] = []

    def instant(*_args: object, floor: float | None = None, **_kwargs: object) -> float:
        floors.append(floor)
        return 0.0

    monkeypatch.setattr("crisync.listener.elements.full_jitter", instant)
    return floors


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
    return ElementsListener(
        settings,
        ElementsClient(session, settings, telemetry=telemetry),
        store,
        asyncio.Event(),
        stopping or asyncio.Event(),
        telemetry=telemetry,
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


@pytest.fixture
def elements_sim() -> ElementsSimulator:
    """The shared simulator, started on a whole second so Date and stamps line up."""
    return ElementsSimulator(objects=30, seed=7, password=ELEMENTS_PASSWORD, start=START)


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
