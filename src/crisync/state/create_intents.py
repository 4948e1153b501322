"""Create intents: a Pure create that is under way, or whose answer never arrived."""

from __future__ import annotations

import aiosqlite

from crisync.state.store import fetch_one, utc_now


async def add(
    conn: aiosqlite.Connection,
    source: str,
    kind: str,
    key: str,
    *,
    pure_type: str,
    id_source: str,
    primary_id: str,
) -> None:
    await conn.execute(
        """INSERT OR REPLACE INTO create_intents
           (source, kind, key, pure_type, id_source, primary_id, started_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (source, kind, key, pure_type, id_source, primary_id, utc_now()),
    )


async def exists(conn: aiosqlite.Connection, source: str, kind: str, key: str) -> bool:
    row = await fetch_one(
        conn,
        "SELECT 1 FROM create_intents WHERE source = ? AND kind = ? AND key = ?",
        (source, kind, key),
    )
    return row is not None


async def remove(conn: aiosqlite.Connection, source: str, kind: str, key: str) -> None:
    await conn.execute(
        "DELETE FROM create_intents WHERE source = ? AND kind = ? AND key = ?", (source, kind, key)
    )
