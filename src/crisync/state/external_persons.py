"""External persons crisync links contributors to, by normalised name."""

from __future__ import annotations

import aiosqlite

from crisync.state.store import Queries, Store, fetch_all, fetch_one

_PUT = """INSERT INTO external_persons (name_key, target_uuid) VALUES (?, ?)
          ON CONFLICT (name_key) DO UPDATE SET target_uuid = excluded.target_uuid"""


async def get(conn: Queries, name_key: str) -> str | None:
    """The target uuid of the external person with this name, if crisync knows one."""
    row = await fetch_one(
        conn, "SELECT target_uuid FROM external_persons WHERE name_key = ?", (name_key,)
    )
    return None if row is None else str(row[0])


async def put(conn: aiosqlite.Connection, name_key: str, target_uuid: str) -> None:
    """Within the caller's transaction."""
    await conn.execute(_PUT, (name_key, target_uuid))


async def remember(store: Store, name_key: str, target_uuid: str) -> None:
    """In a transaction of its own, one round trip to the database thread."""
    await store.write(_PUT, (name_key, target_uuid))


async def all_external_persons(conn: aiosqlite.Connection) -> dict[str, str]:
    rows = await fetch_all(conn, "SELECT name_key, target_uuid FROM external_persons")
    return {str(r[0]): str(r[1]) for r in rows}
