from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from crisync.state import epoch, inbox
from crisync.state.inbox import ChangeEvent
from crisync.state.store import Store, iso_utc, utc_now

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def change(key: str, minutes: int, title: str = "t") -> ChangeEvent:
    return ChangeEvent(
        "elements:publications",
        "elements",
        "publication",
        key,
        "upsert",
        T0 + timedelta(minutes=minutes),
        {"title": title},
    )


async def test_repeats_on_feed_key_and_timestamp_are_dropped(store: Store) -> None:
    async with store.transaction() as conn:
        assert await inbox.add_events(conn, [change("1", 0), change("2", 0)], utc_now()) == 2
        # The lookback re-reads the same change, in another offset: the same instant.
        same_instant = ChangeEvent(
            "elements:publications",
            "elements",
            "publication",
            "1",
            "upsert",
            T0.astimezone(ZoneInfo("Europe/Paris")),
            {"title": "t"},
        )
        assert await inbox.add_events(conn, [same_instant, change("2", 1)], utc_now()) == 1
        assert await inbox.pending_count(conn) == 3


async def test_claim_takes_the_newest_event_of_each_idle_key(store: Store) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(
            conn, [change("1", 0, "old"), change("2", 0), change("1", 5, "new")], utc_now()
        )
    async with store.reading() as conn:
        claimed = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=10)
        assert [(e.key, e.payload["title"]) for e in claimed] == [("1", "new"), ("2", "t")]
        busy = await inbox.claim_ready(
            conn, busy_keys=["elements/publication/1"], now=utc_now(), limit=10
        )
        assert [e.key for e in busy] == ["2"]


async def test_completing_the_newest_supersedes_older_events_only(store: Store) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("1", 0), change("1", 5)], utc_now())
    async with store.reading() as conn:
        (newest,) = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=10)
    async with store.transaction() as conn:
        # A change that arrives while the newest is being handled stays pending.
        await inbox.add_events(conn, [change("1", 9)], utc_now())
        await inbox.complete(conn, newest)
        assert await inbox.pending_count(conn) == 1


async def test_a_postponed_event_waits_for_its_time(store: Store) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("1", 0)], utc_now())
    async with store.reading() as conn:
        (event,) = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=10)
    later = iso_utc(datetime.now(UTC) + timedelta(minutes=1))
    async with store.transaction() as conn:
        await inbox.postpone(conn, event, attempts=1, not_before=later)
        assert await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=10) == []
        assert await inbox.next_retry_at(conn) == later
        (again,) = await inbox.claim_ready(conn, busy_keys=[], now=later, limit=10)
    assert again.attempts == 1


async def test_a_postponed_key_does_not_hold_back_the_keys_after_it(store: Store) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change(str(n), n) for n in range(5)], utc_now())
    async with store.reading() as conn:
        first, *_ = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=1)
    later = iso_utc(datetime.now(UTC) + timedelta(minutes=1))
    async with store.transaction() as conn:
        await inbox.postpone(conn, first, attempts=1, not_before=later)
    async with store.reading() as conn:
        claimed = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=2)
    assert [e.key for e in claimed] == ["1", "2"]


async def test_held_routes_wait_and_only_takes_the_routes_asked_for(store: Store) -> None:
    """What the outage circuit asks of a claim: none of an API that is out, or one probe."""
    other = ChangeEvent("f", "s", "other", "9", "upsert", datetime(2026, 1, 1, tzinfo=UTC), {})
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("1", 0), other, change("2", 0)], utc_now())
    async with store.reading() as conn:
        held = await inbox.claim_ready(
            conn, busy_keys=[], now=utc_now(), limit=10, held=["elements/publication"]
        )
        probe = await inbox.claim_ready(
            conn,
            busy_keys=["elements/publication/1"],
            now=utc_now(),
            limit=1,
            only=["elements/publication"],
        )
        assert await inbox.pending_count(conn, routes=["elements/publication"]) == 2
    assert [(e.kind, e.key) for e in held] == [("other", "9")]
    assert [(e.kind, e.key) for e in probe] == [("publication", "2")]


@pytest.mark.parametrize(
    ("query", "index"),
    [(inbox.CLAIM_ANY, "inbox_pending_order"), (inbox.CLAIM_CHANGES, "inbox_pending_changes")],
)
async def test_a_claim_walks_the_pending_events_in_order_and_sorts_nothing(
    store: Store, query: str, index: str
) -> None:
    async with store.reading() as conn:
        plan = [
            row[3]
            for row in await conn.execute_fetchall(
                f"EXPLAIN QUERY PLAN {query}", (utc_now(), "[]", "[]", None, None, 10)
            )
        ]
    assert plan[0] == f"SCAN o USING INDEX {index}"
    assert not [step for step in plan if "TEMP B-TREE" in step or step.startswith("SCAN x")]


async def test_a_done_event_leaves_a_compact_record_and_a_dead_one_keeps_its_payload(
    store: Store,
) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("1", 0), change("1", 5), change("2", 0)], utc_now())
    async with store.reading() as conn:
        newest_of_1, event_2 = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=2)
    async with store.transaction() as conn:
        await inbox.complete(conn, newest_of_1)
        await inbox.complete(conn, event_2, state="dead")
    async with store.reading() as conn:
        rows = await conn.execute_fetchall(
            "SELECT key, state, payload FROM inbox LEFT JOIN inbox_payloads USING (id) ORDER BY id"
        )
        done = await conn.execute_fetchall(
            "SELECT key, feed, changed_at FROM inbox_done ORDER BY changed_at"
        )
        payloads = await conn.execute_fetchall("SELECT COUNT(*) FROM inbox_payloads")
    assert [tuple(row) for row in rows] == [("2", "dead", '{"title":"t"}')]
    minute = 60_000_000
    assert [tuple(row) for row in done] == [
        ("1", "elements:publications", epoch.microseconds(T0)),
        ("1", "elements:publications", epoch.microseconds(T0) + 5 * minute),
    ]
    assert list(payloads[0]) == [1]


async def test_a_repeat_of_a_done_event_is_dropped_until_it_is_pruned(store: Store) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("1", 0), change("2", 0)], utc_now())
    async with store.reading() as conn:
        events = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=2)
    async with store.transaction() as conn:
        await inbox.complete(conn, *events)
        # The lookback brings both back, one of them changed since.
        assert await inbox.add_events(conn, [change("1", 0), change("2", 3)], utc_now()) == 1
        assert await inbox.prune(conn, datetime.now(UTC) - timedelta(hours=1)) == 0
        assert await inbox.prune(conn, datetime.now(UTC) + timedelta(seconds=2)) == 2
        assert await inbox.add_events(conn, [change("1", 0)], utc_now()) == 1
        assert await inbox.pending_count(conn) == 2


async def test_a_change_crisync_made_itself_is_recorded_done_unless_it_waits_already(
    store: Store,
) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("1", 0)], utc_now())
        # The write-back's echo: no work, and its copy from the feed is a repeat.
        assert (
            await inbox.add_events(conn, [change("1", 0), change("2", 0)], utc_now(), done=True)
            == 1
        )
        assert await inbox.add_events(conn, [change("2", 0)], utc_now()) == 0
        assert await inbox.pending_count(conn) == 1


async def test_the_kind_an_object_was_read_as_is_found_among_done_events_too(
    store: Store,
) -> None:
    record = ChangeEvent("unicat:p", "unicat", "thesis", "g1", "upsert", T0, {})
    async with store.transaction() as conn:
        await inbox.add_events(conn, [record], utc_now())
    async with store.reading() as conn:
        waiting = await inbox.kind_of(conn, "unicat", ["book", "thesis"], "unicat:p", "g1")
        events = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=1)
    async with store.transaction() as conn:
        await inbox.complete(conn, *events)
    async with store.reading() as conn:
        done = await inbox.kind_of(conn, "unicat", ["book", "thesis"], "unicat:p", "g1")
        other_feed = await inbox.kind_of(conn, "unicat", ["thesis"], "unicat:q", "g1")
    assert (waiting, done, other_feed) == ("thesis", "thesis", None)


async def test_changes_are_claimed_past_waiting_backfill_and_a_key_with_a_change_is_one(
    store: Store,
) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(
            conn, [change(str(n), 0) for n in range(5)], utc_now(), backfill=True
        )
        await inbox.add_events(conn, [change("3", 5), change("4", 5), change("9", 0)], utc_now())
        await inbox.add_events(conn, [change("4", 10)], utc_now(), backfill=True)
    async with store.reading() as conn:
        changes = await inbox.claim_ready(
            conn, busy_keys=[], now=utc_now(), limit=10, changes_only=True
        )
        every = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=10)
        counts = [await inbox.pending_count(conn, backfill=b) for b in (None, True, False)]
    # Keys 3 and 4 carry their backfill events along with their changes; key 9 is a change.
    assert [(e.key, e.backfill) for e in changes] == [("3", False), ("4", False), ("9", False)]
    # Taking every key, one counts as backfill by its first and newest events (key 4: should
    # it be held back as backfill, the claim of changes takes it).
    assert [(e.key, e.backfill) for e in every] == [
        ("0", True),
        ("1", True),
        ("2", True),
        ("3", False),
        ("4", True),
        ("9", False),
    ]
    assert counts == [9, 6, 3]


async def test_a_repeat_of_a_pending_event_keeps_the_payload_it_came_with(store: Store) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, [change("1", 0, title="first")], utc_now())
        assert await inbox.add_events(conn, [change("1", 0, title="again")], utc_now()) == 0
    async with store.reading() as conn:
        [event] = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=5)
    assert event.payload == {"title": "first"}


async def test_the_pages_of_done_events_payloads_go_back_to_the_file_system(store: Store) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(
            conn, [change(str(n), 0, title="t" * 4000) for n in range(200)], utc_now()
        )
    async with store.reading() as conn:
        events = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=200)
    async with store.transaction() as conn:
        await inbox.complete(conn, *events)
    pages = "SELECT * FROM pragma_page_count(), pragma_freelist_count()"
    async with store.reading() as conn:
        [(before, free)] = await conn.execute_fetchall(pages)
    await store.give_back_free_pages()
    async with store.reading() as conn:
        [(after, left)] = await conn.execute_fetchall(pages)
    assert free >= 200  # a page or more per payload
    assert (after, left) == (before - free, 0)
