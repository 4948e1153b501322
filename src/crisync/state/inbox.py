"""The inbox: change events waiting for a handler, deduplicated on (feed, key, changed_at)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import aiosqlite

from crisync.state import epoch
from crisync.state.store import Queries, fetch_all, fetch_one, iso_utc

Action = Literal["upsert", "delete"]


@dataclass(frozen=True)
class ChangeEvent:
    """What a listener read from a feed."""

    feed: str
    source: str
    kind: str
    key: str
    action: Action
    changed_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class InboxEvent:
    """A pending inbox row: the newest event of its key."""

    id: int
    feed: str
    source: str
    kind: str
    key: str
    action: Action
    changed_at: str
    observed_at: str
    payload: dict[str, Any]
    attempts: int
    # Backfill work (a first pass, a re-read, `resync --all`): no ordinary change of its key
    # waits with it. It may be held back (a backfill window) where changes are not.
    backfill: bool = False

    @property
    def object_key(self) -> str:
        return object_key(self.source, self.kind, self.key)


def object_key(source: str, kind: str, key: str) -> str:
    return f"{source}/{kind}/{key}"


async def add_events(
    conn: aiosqlite.Connection,
    events: Iterable[ChangeEvent],
    observed_at: str,
    *,
    done: bool = False,
    backfill: bool = False,
) -> int:
    """Insert what is new; returns how many rows were added (repeats are dropped).

    `done`: events that need no work (crisync's own change, which its feed will bring
    back); kept, like every done event, only so that the feed's copy is dropped as a repeat.
    `backfill`: bulk work (a first pass, a re-read, `resync --all`), not ordinary changes.
    Within the caller's transaction: a pending event and its payload are stored together.
    """
    events = list(events)
    before = conn.total_changes
    if done:
        # A record of a done event, unless the same change waits in the inbox already.
        await conn.executemany(
            """INSERT OR IGNORE INTO inbox_done (source, kind, key, feed, changed_at, observed_at)
               SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (
                   SELECT 1 FROM inbox WHERE feed = ? AND key = ? AND changed_at = ?)""",
            [
                (
                    e.source,
                    e.kind,
                    e.key,
                    e.feed,
                    epoch.microseconds(e.changed_at),
                    epoch.seconds(datetime.fromisoformat(observed_at)),
                    e.feed,
                    e.key,
                    iso_utc(e.changed_at),
                )
                for e in events
            ],
        )
        return conn.total_changes - before
    await conn.executemany(
        """INSERT OR IGNORE INTO inbox
               (feed, source, kind, key, action, changed_at, observed_at, backfill)
           SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (
               SELECT 1 FROM inbox_done
               WHERE source = ? AND kind = ? AND key = ? AND feed = ? AND changed_at = ?)""",
        [
            (
                e.feed,
                e.source,
                e.kind,
                e.key,
                e.action,
                iso_utc(e.changed_at),
                observed_at,
                int(backfill),
                e.source,
                e.kind,
                e.key,
                e.feed,
                epoch.microseconds(e.changed_at),
            )
            for e in events
        ],
    )
    added = conn.total_changes - before
    if added:
        # A repeat of an event still pending keeps the payload it came with.
        await conn.executemany(
            """INSERT OR IGNORE INTO inbox_payloads (id, payload)
               SELECT id, ? FROM inbox
               WHERE feed = ? AND key = ? AND changed_at = ? AND state = 'pending'""",
            [
                (
                    json.dumps(e.payload, separators=(",", ":"), sort_keys=True),
                    e.feed,
                    e.key,
                    iso_utc(e.changed_at),
                )
                for e in events
            ],
        )
    return added


# The pending events in arrival order, each key's first one standing for the key: the walk
# stops after `limit` keys, however many events wait (grouping them all took 150 ms at 100k).
# The keys with an ordinary change only (CLAIM_CHANGES) walk the index of pending changes,
# past any number of waiting backfill events. A key counts as backfill when its first and
# newest pending events are; one with a change between them is claimed as a change by
# CLAIM_CHANGES should the dispatcher hold it back as backfill.
CLAIM_READY = """
    SELECT n.id, n.feed, n.source, n.kind, n.key, n.action, n.changed_at, n.observed_at,
           (SELECT payload FROM inbox_payloads WHERE id = n.id), n.attempts,
           o.backfill AND n.backfill
       FROM inbox AS o
       JOIN inbox AS n ON n.id = (
           SELECT MAX(x.id) FROM inbox AS x
           WHERE x.state = 'pending' AND x.source = o.source AND x.kind = o.kind
             AND x.key = o.key)
       WHERE o.state = 'pending' {changes_o}
         AND NOT EXISTS (
           SELECT 1 FROM inbox AS p
           WHERE p.state = 'pending' AND p.source = o.source AND p.kind = o.kind
             AND p.key = o.key AND p.id < o.id {changes_p})
         AND (n.not_before IS NULL OR n.not_before <= ?)
         AND o.source || '/' || o.kind || '/' || o.key NOT IN (SELECT value FROM json_each(?))
         AND o.source || '/' || o.kind NOT IN (SELECT value FROM json_each(?))
         AND (? IS NULL OR o.source || '/' || o.kind IN (SELECT value FROM json_each(?)))
       ORDER BY o.id
       LIMIT ?"""
CLAIM_ANY = CLAIM_READY.format(changes_o="", changes_p="")
CLAIM_CHANGES = CLAIM_READY.format(changes_o="AND o.backfill = 0", changes_p="AND p.backfill = 0")


async def claim_ready(
    conn: aiosqlite.Connection,
    *,
    busy_keys: Iterable[str],
    now: str,
    limit: int,
    held: Iterable[str] = (),
    only: Iterable[str] | None = None,
    changes_only: bool = False,
) -> list[InboxEvent]:
    """The newest pending event of each key not in `busy_keys`, oldest keys first.

    `held` and `only` are routes ("source/kind"): events of a held route wait (their API
    is out), and with `only`, just those routes' events are taken (a probe of that API).
    `changes_only`: keys whose pending events are all backfill wait.
    Older pending events of a key are superseded by its newest: they are completed with it.
    """
    only_json = None if only is None else json.dumps(list(only))
    rows = await fetch_all(
        conn,
        CLAIM_CHANGES if changes_only else CLAIM_ANY,
        (now, json.dumps(list(busy_keys)), json.dumps(list(held)), only_json, only_json, limit),
    )
    return [
        InboxEvent(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9], bool(r[10])
        )
        for r in rows
    ]


# Done events leave the inbox for a compact record of them (inbox_done), which is all a
# repeat of one is recognised by; their payloads go with their rows (ON DELETE CASCADE).
_TO_DONE = f"""INSERT OR IGNORE INTO inbox_done (source, kind, key, feed, changed_at, observed_at)
    SELECT source, kind, key, feed, {epoch.SQL_MICROSECONDS.format("changed_at")},
           {epoch.SQL_SECONDS.format("observed_at")}
    FROM inbox WHERE {{where}}"""  # noqa: S608 - fixed expressions
# Of the key of a completed event: itself unless it is dead, and its older pending events.
_CLOSED = """source = ? AND kind = ? AND key = ? AND state = 'pending' AND id <= ?
             AND NOT (id = ? AND ? != 'done')"""


async def complete(conn: aiosqlite.Connection, *events: InboxEvent, state: str = "done") -> None:
    """Close the events and every older pending event of their keys.

    A done event is kept only to recognise a repeat of it (feed, key, changed_at): a compact
    record of it stays, its row and payload go. A dead one stays as it is, for a retry.
    """
    closing = [(e.source, e.kind, e.key, e.id, e.id, state) for e in events]
    await conn.executemany(_TO_DONE.format(where=_CLOSED), closing)
    await conn.executemany(f"DELETE FROM inbox WHERE {_CLOSED}", closing)  # noqa: S608 - fixed clause
    if state != "done":
        await conn.executemany(
            "UPDATE inbox SET state = ?, not_before = NULL WHERE id = ?",
            [(state, e.id) for e in events],
        )


async def mark_done(conn: aiosqlite.Connection, inbox_id: int) -> None:
    """An event that needs no more work (a dead one a newer change superseded)."""
    await conn.execute(_TO_DONE.format(where="id = ?"), (inbox_id,))
    await conn.execute("DELETE FROM inbox WHERE id = ?", (inbox_id,))


async def postpone(
    conn: aiosqlite.Connection, event: InboxEvent, *, attempts: int, not_before: str
) -> None:
    await conn.execute(
        "UPDATE inbox SET attempts = ?, not_before = ? WHERE id = ?",
        (attempts, not_before, event.id),
    )


async def give_back_attempts(conn: aiosqlite.Connection, *events: InboxEvent) -> None:
    """The events' attempts as they were when claimed, ready at once: their failures were
    an outage of the API, not theirs (the dispatcher holds their route while it lasts)."""
    await conn.executemany(
        "UPDATE inbox SET attempts = ?, not_before = NULL WHERE id = ? AND state = 'pending'",
        [(event.attempts, event.id) for event in events],
    )


async def pending_count(
    conn: aiosqlite.Connection,
    *,
    routes: Iterable[str] | None = None,
    backfill: bool | None = None,
) -> int:
    """Pending events, of these routes ("source/kind") only when given, of backfill work
    only (True) or ordinary changes only (False) when asked."""
    if routes is None and backfill is None:
        row = await fetch_one(conn, "SELECT COUNT(*) FROM inbox WHERE state = 'pending'")
    else:
        row = await fetch_one(
            conn,
            """SELECT COUNT(*) FROM inbox WHERE state = 'pending'
                 AND (? IS NULL OR source || '/' || kind IN (SELECT value FROM json_each(?)))
                 AND (? IS NULL OR backfill = ?)""",
            (
                *[None if routes is None else json.dumps(list(routes))] * 2,
                *[None if backfill is None else int(backfill)] * 2,
            ),
        )
    return int(row[0]) if row else 0


async def pending_objects(conn: aiosqlite.Connection) -> list[tuple[str, str, str]]:
    """(source, kind, key) of every object with a pending event."""
    rows = await fetch_all(
        conn,
        """SELECT source, kind, key FROM inbox WHERE state = 'pending'
           GROUP BY source, kind, key ORDER BY MIN(id)""",
    )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


async def waiting_keys(conn: Queries, source: str, kind: str, keys: list[str]) -> set[str]:
    """Of these objects, those with an event still to be handled: pending (waiting, being
    retried, in a handler's hands) or dead until retried. Their outcome is not final."""
    rows = await fetch_all(
        conn,
        """SELECT key FROM inbox
           WHERE state = 'pending' AND source = ? AND kind = ?
             AND key IN (SELECT value FROM json_each(?))
           UNION
           SELECT key FROM dead_letters
           WHERE source = ? AND kind = ? AND key IN (SELECT value FROM json_each(?))""",
        (source, kind, json.dumps(keys)) * 2,
    )
    return {str(r[0]) for r in rows}


async def pending_by_feed(conn: aiosqlite.Connection) -> dict[str, int]:
    """Pending events per feed (feeds without any are left out)."""
    rows = await fetch_all(
        conn, "SELECT feed, COUNT(*) FROM inbox WHERE state = 'pending' GROUP BY feed"
    )
    return {r[0]: int(r[1]) for r in rows}


async def next_retry_at(conn: aiosqlite.Connection) -> str | None:
    """When the earliest postponed event becomes ready again."""
    row = await fetch_one(
        conn, "SELECT MIN(not_before) FROM inbox WHERE state = 'pending' AND not_before IS NOT NULL"
    )
    return row[0] if row else None


async def prune(conn: aiosqlite.Connection, observed_before: datetime) -> int:
    """Forget done events once no lookback can bring them back.

    The records have no index on their time, to stay small: this reads them all, once an
    hour, which is the events of a day.
    """
    cursor = await conn.execute(
        "DELETE FROM inbox_done WHERE observed_at < ?", (epoch.seconds(observed_before),)
    )
    return cursor.rowcount


async def kind_of(
    conn: aiosqlite.Connection, source: str, kinds: Iterable[str], feed: str, key: str
) -> str | None:
    """The kind a feed last read an object as (one of `kinds`), from the events it kept:
    those still waiting (pending or dead) first, then the records of done ones."""
    row = await fetch_one(
        conn,
        """SELECT kind FROM (
               SELECT kind, 1 AS waiting, id AS position FROM inbox WHERE feed = ? AND key = ?
               UNION ALL
               SELECT kind, 0, changed_at FROM inbox_done
               WHERE source = ? AND kind IN (SELECT value FROM json_each(?)) AND key = ?
                 AND feed = ?)
           ORDER BY waiting DESC, position DESC LIMIT 1""",
        (feed, key, source, json.dumps(list(kinds)), key, feed),
    )
    return None if row is None else str(row[0])
