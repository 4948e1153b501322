"""Feed cursors: the high-water mark, the sweep in progress and the feed's health."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from crisync.state.store import fetch_all, fetch_one, iso_utc, utc_now


@dataclass(frozen=True)
class Cursor:
    feed: str
    high_water: datetime | None = None  # server time when the last complete sweep began
    sweep_started: datetime | None = None  # server time when the sweep in progress began
    next_url: str | None = None  # the sweep in progress resumes here
    last_error: str | None = None  # None once a page succeeds again
    last_poll: datetime | None = None  # local time of the last request, whatever its result
    parked_until: datetime | None = None  # credentials refused: no request before then


COLUMNS = "high_water, sweep_started, next_url, last_error, last_poll, parked_until"


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _text(value: datetime | None) -> str | None:
    return iso_utc(value) if value else None


def _cursor(feed: str, row: aiosqlite.Row) -> Cursor:
    return Cursor(feed, _when(row[0]), _when(row[1]), row[2], row[3], _when(row[4]), _when(row[5]))


async def get(conn: aiosqlite.Connection, feed: str) -> Cursor:
    row = await fetch_one(conn, f"SELECT {COLUMNS} FROM cursors WHERE feed = ?", (feed,))  # noqa: S608 - a constant column list
    return Cursor(feed) if row is None else _cursor(feed, row)


async def save(conn: aiosqlite.Connection, cursor: Cursor) -> None:
    await conn.execute(
        f"""INSERT INTO cursors (feed, {COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (feed) DO UPDATE SET high_water = excluded.high_water,
               sweep_started = excluded.sweep_started, next_url = excluded.next_url,
               last_error = excluded.last_error, last_poll = excluded.last_poll,
               parked_until = excluded.parked_until, updated_at = excluded.updated_at""",  # noqa: S608 - a constant column list
        (
            cursor.feed,
            _text(cursor.high_water),
            _text(cursor.sweep_started),
            cursor.next_url,
            cursor.last_error,
            _text(cursor.last_poll),
            _text(cursor.parked_until),
            utc_now(),
        ),
    )


async def all_cursors(conn: aiosqlite.Connection) -> list[Cursor]:
    rows = await fetch_all(conn, f"SELECT {COLUMNS}, feed FROM cursors ORDER BY feed")  # noqa: S608 - a constant column list
    return [_cursor(row[6], row) for row in rows]


async def describe_parked(conn: aiosqlite.Connection) -> list[str]:
    """One line per feed whose API refused the credentials at its last poll, e.g.
    "elements:users refused the credentials (HTTP 401): ...; parked until ..."."""
    return [
        f"{cursor.feed} {cursor.last_error}"
        for cursor in await all_cursors(conn)
        if cursor.parked_until is not None and cursor.last_error
    ]
