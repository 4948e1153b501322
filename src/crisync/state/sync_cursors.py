"""Unicat sync cursors: where a feed's global (cc) and project streams were read up to."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from crisync.state.store import fetch_one, utc_now


@dataclass(frozen=True)
class SyncCursor:
    feed: str
    cc_cursor: int = 0  # items of type "cc" up to this one are done
    cursor: int = 0  # project items up to this one are done
    cc_version: str | None = None  # the server version last announced


async def get(conn: aiosqlite.Connection, feed: str) -> SyncCursor:
    row = await fetch_one(
        conn, "SELECT cc_cursor, cursor, cc_version FROM sync_cursors WHERE feed = ?", (feed,)
    )
    return SyncCursor(feed) if row is None else SyncCursor(feed, row[0], row[1], row[2])


async def save(conn: aiosqlite.Connection, cursor: SyncCursor) -> None:
    await conn.execute(
        """INSERT INTO sync_cursors (feed, cc_cursor, cursor, cc_version, updated_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (feed) DO UPDATE SET cc_cursor = excluded.cc_cursor,
               cursor = excluded.cursor, cc_version = excluded.cc_version,
               updated_at = excluded.updated_at""",
        (cursor.feed, cursor.cc_cursor, cursor.cursor, cursor.cc_version, utc_now()),
    )
