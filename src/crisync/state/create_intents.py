"""Create intents: a create in a target that is under way, or whose answer never arrived."""

from __future__ import annotations

import aiosqlite

from crisync.state.store import Store, fetch_one, utc_now


async def begin(
    store: Store,
    source: str,
    kind: str,
    key: str,
    *,
    target_type: str,
    id_source: str,
    primary_id: str,
) -> bool:
    """Record, durably, that a create is about to be sent; False when an earlier try's intent
    is still there: that create may have reached the target and its answer been lost."""
    recorded = await store.write(
        """INSERT INTO create_intents
           (source, kind, key, target_type, id_source, primary_id, started_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (source, kind, key) DO NOTHING
           RETURNING 1""",
        (source, kind, key, target_type, id_source, primary_id, utc_now()),
    )
    return bool(recorded)


async def remove(conn: aiosqlite.Connection, *objects: tuple[str, str, str]) -> None:
    """Settle the intents of these (source, kind, key): their creates are known to be done."""
    await conn.executemany(
        "DELETE FROM create_intents WHERE source = ? AND kind = ? AND key = ?", objects
    )


async def count(conn: aiosqlite.Connection) -> int:
    row = await fetch_one(conn, "SELECT COUNT(*) FROM create_intents")
    return int(row[0]) if row else 0
