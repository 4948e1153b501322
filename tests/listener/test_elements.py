from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from crisync.config.model import Config, ElementsConfig
from crisync.listener.elements import PAGE_ATTEMPTS, ElementsClient, ElementsListener
from crisync.sim.elements import ElementsSimulator
from crisync.state import cursors, inbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    async with Store.open(config.state.path) as opened:
        yield opened


@pytest.fixture
async def listener(config: Config, store: Store) -> AsyncIterator[ElementsListener]:
    assert config.elements is not None
    async with aiohttp.ClientSession() as session:
        yield ElementsListener(
            config.elements,
            ElementsClient(session, config.elements, telemetry=Telemetry()),
            store,
            asyncio.Event(),
            asyncio.Event(),
            telemetry=Telemetry(),
        )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


def listener_with(
    session: aiohttp.ClientSession, config: Config, store: Store, **changes: object
) -> ElementsListener:
    """A listener whose Elements settings differ from the fixture's by `changes`."""
    assert config.elements is not None
    settings = ElementsConfig(
        **{
            **config.elements.model_dump(),
            **changes,
            "password": changes.get("password", config.elements.password),
        }
    )
    return ElementsListener(
        settings,
        ElementsClient(session, settings, telemetry=Telemetry()),
        store,
        asyncio.Event(),
        asyncio.Event(),
        telemetry=Telemetry(),
    )


async def pending_keys(store: Store) -> list[str]:
    async with (
        store.reading() as conn,
        conn.execute(
            "SELECT kind || ':' || key FROM inbox WHERE state = 'pending' ORDER BY id"
        ) as rows,
    ):
        return [row[0] async for row in rows]


async def test_first_sweep_reads_every_object_and_sets_the_server_high_water(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, per_page=5)
    result = await listener.sweep("publications")
    expected = {f"publication:{i}" for i in elements_sim.object_ids("publication")}
    assert result.complete
    assert result.pages == -(-len(expected) // 5)
    assert set(await pending_keys(store)) == expected
    async with store.reading() as conn:
        cursor = await cursors.get(conn, "elements:publications")
    assert cursor.next_url is None
    assert cursor.high_water is not None
    # The sim's clock, not ours: the sim started with real time, so compare with its clock.
    assert abs((cursor.high_water - elements_sim.now).total_seconds()) < 5


async def test_next_sweep_asks_since_high_water_minus_lookback_and_drops_repeats(
    listener: ElementsListener, store: Store, elements_sim: ElementsSimulator, config: Config
) -> None:
    await listener.sweep("publications")
    before = len(await pending_keys(store))
    first_publication = elements_sim.object_ids("publication")[0]
    elements_sim.advance(5)
    elements_sim.touch("publication", first_publication, title="Changed title")
    result = await listener.sweep("publications")
    assert result.events_added == 1
    assert len(await pending_keys(store)) == before + 1
    last_query = parse_qs(urlsplit(elements_sim.requests[-1][1]).query)
    async with store.reading() as conn:
        cursor = await cursors.get(conn, "elements:publications")
    assert cursor.high_water is not None
    assert config.elements is not None
    since = last_query["affected-since"][0]
    assert "+" in since or since.endswith("Z")  # decoded back: the '+' was sent encoded
    assert last_query["detail"] == ["full"]


async def test_a_page_that_keeps_failing_leaves_the_cursor_and_resumes_later(
    store: Store,
    elements_sim: ElementsSimulator,
    config: Config,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("crisync.listener.elements.full_jitter", lambda *a, **k: 0.01)
    paged = listener_with(session, config, store, per_page=2, categories=["users"])
    elements_sim.truncate_next(count=PAGE_ATTEMPTS)
    await paged.sweep_all()
    async with store.reading() as conn:
        cursor = await cursors.get(conn, "elements:users")
    assert cursor.high_water is None
    assert cursor.last_error is not None
    assert "malformed XML" in cursor.last_error
    assert await pending_keys(store) == []

    await paged.sweep_all()
    async with store.reading() as conn:
        cursor = await cursors.get(conn, "elements:users")
    assert cursor.last_error is None
    assert cursor.high_water is not None
    assert len(await pending_keys(store)) == len(elements_sim.object_ids("user"))


async def test_wrong_credentials_leave_the_cursor_and_say_why(
    store: Store, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, password="wrong-password")
    await listener.sweep_all()
    async with store.reading() as conn:
        cursor = await cursors.get(conn, "elements:users")
        assert await inbox.pending_count(conn) == 0
    assert cursor.high_water is None
    assert cursor.last_error is not None
    assert "invalid credentials" in cursor.last_error
    assert "wrong-password" not in cursor.last_error


async def test_a_retriable_error_is_retried_within_the_sweep(
    listener: ElementsListener,
    store: Store,
    elements_sim: ElementsSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("crisync.listener.elements.full_jitter", lambda *a, **k: 0.01)
    elements_sim.fail_next(504, "database timeout")
    result = await listener.sweep("users")
    assert result.complete
    assert len(await pending_keys(store)) >= len(elements_sim.object_ids("user"))
