from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from crisync.lifecycle import Lifecycle
from crisync.publisher.feed_status import FeedStatus
from crisync.state import cursors, inbox, outbox
from crisync.state.cursors import Cursor
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.events import claim_one, enqueue, user
from tests.support.mqtt import problems_with

PREFIX = "crisync-feeds"
HIGH_WATER = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def feed_status(store: Store, until: asyncio.Event | None = None) -> FeedStatus:
    return FeedStatus(
        store,
        topic_prefix=PREFIX,
        life=Lifecycle(handlers_done=until or asyncio.Event()),
        telemetry=Telemetry(),
    )


async def save(store: Store, cursor: Cursor) -> None:
    async with store.transaction() as conn:
        await cursors.save(conn, cursor)


async def queued(store: Store) -> list[dict[str, Any]]:
    """The feed status messages in the outbox, each checked against the feed schema."""
    async with store.reading() as conn:
        messages = await outbox.oldest(conn, 100)
    for message in messages:
        assert message.topic == f"{PREFIX}/feeds/elements:users"
        assert message.retain
        assert problems_with(message.topic, message.payload.encode()) == []
    return [json.loads(message.payload) for message in messages]


async def test_a_feed_status_is_queued_when_it_changes_and_only_then(store: Store) -> None:
    polled = HIGH_WATER + timedelta(seconds=3)
    cursor = Cursor("elements:users", high_water=HIGH_WATER, last_poll=polled)
    await save(store, cursor)
    await enqueue(store, user("1", "Lovelace"), user("2", "Hopper"))
    status = feed_status(store)

    assert await status.refresh() == 1
    assert await status.refresh() == 0
    handled = await claim_one(store)
    async with store.transaction() as conn:
        await inbox.complete(conn, handled)
    assert await status.refresh() == 1
    parked_until = datetime.now(UTC) + timedelta(minutes=5)
    await save(store, replace(cursor, last_error="elements: 401", parked_until=parked_until))
    assert await status.refresh() == 1

    first, second, third = await queued(store)
    assert first == {
        "schema": "crisync.feed/1",
        "feed": "elements:users",
        "high_water": "2026-11-01T12:00:00.000000+00:00",
        "last_poll": "2026-11-01T12:00:03.000000+00:00",
        "backlog": 2,
        "last_error": None,
        "parked": False,
        "parked_until": None,
    }
    assert second["backlog"] == 1
    assert (third["parked"], third["last_error"]) == (True, "elements: 401")
    assert third["parked_until"] == parked_until.isoformat(timespec="microseconds")


async def test_parking_that_ended_is_published_as_such(store: Store) -> None:
    ended = datetime.now(UTC) - timedelta(seconds=1)
    await save(store, Cursor("elements:users", parked_until=ended))
    await feed_status(store).refresh()
    (status,) = await queued(store)
    assert status["parked"] is False
    assert status["high_water"] is None


async def test_a_restart_does_not_queue_an_unchanged_status_again(store: Store) -> None:
    await save(store, Cursor("elements:users", high_water=HIGH_WATER))
    assert await feed_status(store).refresh() == 1
    done = asyncio.Event()
    done.set()
    # A last round only, as at the end of `crisync once`.
    await feed_status(store, until=done).run()
    assert len(await queued(store)) == 1
