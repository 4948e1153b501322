"""The outbox: outcomes waiting for the MQTT broker's acknowledgement."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from crisync.state.store import Store, fetch_all, fetch_one, utc_now


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: str
    retain: bool
    # A retained message whose topic has had a newer payload since: publishing it late (after
    # a lost acknowledgement) would overwrite the newer retained state at the broker.
    superseded: bool = False


async def add(
    conn: aiosqlite.Connection, topic: str, payload: str, *, retain: bool = False
) -> None:
    """Queue a message; a retained one is also remembered, to publish again after a reconnect."""
    await add_all(conn, [(topic, payload)], retain=retain)


async def add_all(
    conn: aiosqlite.Connection, messages: Sequence[tuple[str, str]], *, retain: bool = False
) -> None:
    """Queue (topic, payload) messages in one round trip."""
    now = utc_now()
    await conn.executemany(
        "INSERT INTO outbox (topic, payload, retain, created_at) VALUES (?, ?, ?, ?)",
        [(topic, payload, int(retain), now) for topic, payload in messages],
    )
    if retain:
        await conn.executemany(
            """INSERT INTO retained (topic, payload, updated_at) VALUES (?, ?, ?)
               ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload,
                   updated_at = excluded.updated_at""",
            [(topic, payload, now) for topic, payload in messages],
        )


async def clear_retained(conn: aiosqlite.Connection, topics: Sequence[str]) -> None:
    """Queue an empty retained message on each topic, which makes the broker forget the one
    it keeps, and forget the topics here: nothing publishes them again after a reconnect."""
    now = utc_now()
    await conn.executemany(
        "INSERT INTO outbox (topic, payload, retain, created_at) VALUES (?, '', 1, ?)",
        [(topic, now) for topic in topics],
    )
    await conn.executemany("DELETE FROM retained WHERE topic = ?", [(topic,) for topic in topics])


async def retained_messages(conn: aiosqlite.Connection) -> list[tuple[str, str]]:
    """(topic, payload) of the latest retained message of every topic."""
    rows = await fetch_all(conn, "SELECT topic, payload FROM retained ORDER BY topic")
    return [(r[0], r[1]) for r in rows]


async def oldest(conn: aiosqlite.Connection, limit: int) -> list[OutboxMessage]:
    rows = await fetch_all(
        conn,
        """SELECT o.id, o.topic, o.payload, o.retain,
                  o.retain AND r.payload IS NOT NULL AND r.payload != o.payload
           FROM outbox AS o LEFT JOIN retained AS r ON r.topic = o.topic
           ORDER BY o.id LIMIT ?""",
        (limit,),
    )
    return [OutboxMessage(r[0], r[1], r[2], bool(r[3]), bool(r[4])) for r in rows]


async def remove(store: Store, ids: Sequence[int]) -> None:
    """Forget published messages, in one round trip (the publisher does it for every batch)."""
    await store.write(
        "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
    )


async def depth(conn: aiosqlite.Connection) -> int:
    row = await fetch_one(conn, "SELECT COUNT(*) FROM outbox")
    return int(row[0]) if row else 0
