"""Feed cursors: the high-water mark and the sweep in progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from crisync.state.store import iso_utc, utc_now


@dataclass(frozen=True)
class Cursor:
    feed: str
    high_water: datetime | None = None
    sweep_started: datetime | None = None
    next_url: str | None = None
    last_error: str | None = None


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _text(value: datetime | None) -> str | None:
    return iso_utc(value) if value else None


async def get(conn: aiosqlite.Connection, feed: str) -> Cursor:
    async with conn.execute(
        "SELECT high_water, sweep_started, next_url, last_error FROM cursors WHERE feed = ?",
        (feed,),
    ) as rows:
        row = await rows.fetchone()
    if row is None:
        return Cursor(feed)
    return Cursor(feed, _when(row[0]), _when(row[1]), row[2], row[3])


async def save(conn: aiosqlite.Connection, cursor: Cursor) -> None:
    await conn.execute(
        """INSERT INTO cursors (feed, high_water, sweep_started, next_url, last_error, updated_at)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (feed) DO UPDATE SET high_water = excluded.high_water,
               sweep_started = excluded.sweep_started, next_url = excluded.next_url,
               last_error = excluded.last_error, updated_at = excluded.updated_at""",
        (
            cursor.feed,
            _text(cursor.high_water),
            _text(cursor.sweep_started),
            cursor.next_url,
            cursor.last_error,
            utc_now(),
        ),
    )


async def all_cursors(conn: aiosqlite.Connection) -> list[Cursor]:
    async with conn.execute(
        "SELECT feed, high_water, sweep_started, next_url, last_error FROM cursors ORDER BY feed"
    ) as rows:
        return [Cursor(r[0], _when(r[1]), _when(r[2]), r[3], r[4]) async for r in rows]
