"""Dead letters: events that failed for good, kept with their error until retried."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from crisync.errors import ErrorInfo
from crisync.state import epoch, inbox
from crisync.state.inbox import InboxEvent
from crisync.state.store import fetch_all, fetch_one, utc_now


@dataclass(frozen=True)
class DeadLetter:
    inbox_id: int
    source: str
    kind: str
    key: str
    error_class: str
    status: int | None
    message: str
    attempts: int
    failed_at: str


async def add(
    conn: aiosqlite.Connection, event: InboxEvent, error: ErrorInfo, attempts: int
) -> None:
    await conn.execute(
        """INSERT OR REPLACE INTO dead_letters
           (inbox_id, source, kind, key, error_class, status, message, attempts, failed_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            event.id,
            event.source,
            event.kind,
            event.key,
            error.error_class,
            error.status,
            error.message,
            attempts,
            utc_now(),
        ),
    )


async def all_dead_letters(conn: aiosqlite.Connection) -> list[DeadLetter]:
    rows = await fetch_all(
        conn,
        """SELECT inbox_id, source, kind, key, error_class, status, message, attempts, failed_at
           FROM dead_letters ORDER BY inbox_id""",
    )
    return [DeadLetter(*r) for r in rows]


async def count(conn: aiosqlite.Connection) -> int:
    row = await fetch_one(conn, "SELECT COUNT(*) FROM dead_letters")
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Requeued:
    requeued: int  # back in the inbox as pending
    superseded: int  # dropped: a newer change of the same object came since


# Whether a dead event was superseded: a later event of its object waits in the inbox, or
# a newer change of it was done. Done events are compact records without their arrival
# order, so "newer" is the source's change time: the events the dead one closed when it
# failed (its older ones, the same change on another feed among them) supersede nothing.
SUPERSEDED = f"""SELECT EXISTS (
        SELECT 1 FROM inbox AS n
        WHERE n.source = d.source AND n.kind = d.kind AND n.key = d.key AND n.id > d.id)
    OR EXISTS (
        SELECT 1 FROM inbox_done AS n
        WHERE n.source = d.source AND n.kind = d.kind AND n.key = d.key
          AND n.changed_at > {epoch.SQL_MICROSECONDS.format("d.changed_at")})
    FROM inbox AS d WHERE d.id = ?"""  # noqa: S608 - a fixed expression


async def requeue(conn: aiosqlite.Connection, object_key: str | None = None) -> Requeued:
    """Put dead letters back in the inbox: all of them, or those of one `source/kind/key`."""
    letters = [
        letter
        for letter in await all_dead_letters(conn)
        if object_key is None or f"{letter.source}/{letter.kind}/{letter.key}" == object_key
    ]
    requeued = superseded = 0
    for letter in letters:
        found = await fetch_one(conn, SUPERSEDED, (letter.inbox_id,))
        newer = bool(found and found[0])
        if newer:
            await inbox.mark_done(conn, letter.inbox_id)  # its dead letter goes with it
        else:
            await conn.execute(
                "UPDATE inbox SET state = 'pending', attempts = 0, not_before = NULL WHERE id = ?",
                (letter.inbox_id,),
            )
            await conn.execute("DELETE FROM dead_letters WHERE inbox_id = ?", (letter.inbox_id,))
        superseded += newer
        requeued += not newer
    return Requeued(requeued, superseded)
