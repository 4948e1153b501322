from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crisync.errors import ErrorInfo
from crisync.state import dead_letters, inbox
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.store import Store, utc_now

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def change(key: str, minutes: int, feed: str = "elements:publications") -> ChangeEvent:
    return ChangeEvent(
        feed, "elements", "publication", key, "upsert", T0 + timedelta(minutes=minutes), {}
    )


async def claim(store: Store) -> list[InboxEvent]:
    async with store.reading() as conn:
        return await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=10)


async def fail_for_good(store: Store, *events: ChangeEvent) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, events, utc_now())
    claimed = await claim(store)
    async with store.transaction() as conn:
        for event in claimed:
            await inbox.complete(conn, event, state="dead")
            await dead_letters.add(conn, event, ErrorInfo("PermanentError", 400, "no"), 1)


async def test_a_dead_letter_goes_back_unless_a_newer_change_of_its_object_came(
    store: Store,
) -> None:
    # Object 1's failed event closes the same change read by another feed before it.
    await fail_for_good(store, change("1", 0, feed="elements:other"), change("1", 0))
    await fail_for_good(store, change("2", 0), change("3", 0))
    # Object 2 changed since, and that change was done (read by a resync: a feed of its
    # own). Object 3 changed since, and that change waits.
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("2", 1, feed="resync:now"), change("3", 5)], utc_now())
    newer = [event for event in await claim(store) if event.key == "2"]
    async with store.transaction() as conn:
        await inbox.complete(conn, *newer)
        requeued = await dead_letters.requeue(conn)
        left = await dead_letters.count(conn)
        pending = await inbox.pending_objects(conn)
        repeat = await inbox.add_events(conn, [change("2", 0)], utc_now())
    assert requeued == dead_letters.Requeued(requeued=1, superseded=2)
    assert left == 0
    assert pending == [("elements", "publication", "1"), ("elements", "publication", "3")]
    # The superseded dead event of object 2 is recorded as done: the feed's repeat is one.
    assert repeat == 0


async def test_a_dead_letter_is_not_superseded_by_an_older_change_done_after_it(
    store: Store,
) -> None:
    await fail_for_good(store, change("1", 5))
    async with store.transaction() as conn:
        # A late event of an earlier change, from another feed, done after the failure.
        await inbox.add_events(conn, [change("1", 0, feed="elements:other")], utc_now())
    async with store.transaction() as conn:
        await inbox.complete(conn, *await claim(store))
        requeued = await dead_letters.requeue(conn)
    assert requeued == dead_letters.Requeued(requeued=1, superseded=0)


async def test_an_object_waits_while_pending_or_dead_and_not_once_done(store: Store) -> None:
    await fail_for_good(store, change("dead", 0))
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("pending", 0), change("done", 0)], utc_now())
    done = [event for event in await claim(store) if event.key == "done"]
    async with store.transaction() as conn:
        await inbox.complete(conn, *done)
    keys = ["dead", "pending", "done", "never-read"]
    waiting = await inbox.waiting_keys(store.lookups, "elements", "publication", keys)
    assert waiting == {"dead", "pending"}
    assert await inbox.waiting_keys(store.lookups, "elements", "user", keys) == set()
