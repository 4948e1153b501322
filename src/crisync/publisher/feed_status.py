"""Feed status: each feed's health, retained on {prefix}/feeds/{feed} whenever it changes.

The listeners only keep their cursors; this loop reads the cursors table and the inbox
every few seconds and queues a new retained message for each feed whose status differs
from the one it last queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime

from crisync.lifecycle import Lifecycle
from crisync.outcome import topic_level
from crisync.state import cursors, inbox, outbox
from crisync.state.cursors import Cursor
from crisync.state.store import Store, iso_utc
from crisync.telemetry import Telemetry

FEED_SCHEMA = "crisync.feed/1"
REFRESH_EVERY = 2.0


def feed_topic(prefix: str, feed: str) -> str:
    return f"{prefix}/feeds/{topic_level(feed)}"


def feed_payload(cursor: Cursor, backlog: int, now: datetime) -> str:
    def instant(moment: datetime | None) -> str | None:
        return iso_utc(moment) if moment else None

    document = {
        "schema": FEED_SCHEMA,
        "feed": cursor.feed,
        "high_water": instant(cursor.high_water),
        "last_poll": instant(cursor.last_poll),
        "backlog": backlog,
        "last_error": cursor.last_error,
        "parked": cursor.parked_until is not None and cursor.parked_until > now,
        "parked_until": instant(cursor.parked_until),
    }
    return json.dumps(document, separators=(",", ":"))


class FeedStatus:
    loop_name = "feed-status"
    # A round takes two small reads and at most one write.
    beat_deadline = 60.0

    def __init__(
        self,
        store: Store,
        *,
        topic_prefix: str,
        life: Lifecycle,
        telemetry: Telemetry,
    ) -> None:
        """Once `life.handlers_done`, the feeds and handlers are done: refresh a last time."""
        self._store = store
        self._prefix = topic_prefix
        self._outbox_ready = life.outbox_ready
        self._until = life.handlers_done
        self._telemetry = telemetry
        self._queued: dict[str, str] = {}  # topic → the payload last queued

    async def run(self) -> None:
        async with self._store.reading() as conn:
            remembered = await outbox.retained_messages(conn)
        # What an earlier run queued counts: a restart does not repeat an unchanged status.
        self._queued = {
            topic: payload
            for topic, payload in remembered
            if topic.startswith(f"{self._prefix}/feeds/")
        }
        while True:
            last_round = self._until.is_set()
            await self.refresh()
            self._telemetry.beat(self.loop_name)
            if last_round:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until.wait(), timeout=REFRESH_EVERY)

    async def refresh(self) -> int:
        """Queue the status of every feed that changed; returns how many did."""
        now = datetime.now(UTC)
        async with self._store.reading() as conn:
            feeds = await cursors.all_cursors(conn)
            backlog = await inbox.pending_by_feed(conn)
        changed: dict[str, str] = {}
        for cursor in feeds:
            topic = feed_topic(self._prefix, cursor.feed)
            payload = feed_payload(cursor, backlog.get(cursor.feed, 0), now)
            if self._queued.get(topic) != payload:
                changed[topic] = payload
        if changed:
            async with self._store.transaction() as conn:
                for topic, payload in changed.items():
                    await outbox.add(conn, topic, payload, retain=True)
            self._queued.update(changed)
            self._outbox_ready.set()
        return len(changed)
