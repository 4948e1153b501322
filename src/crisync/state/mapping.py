"""The mapping: source object ↔ Pure content, with what was last written."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from crisync.state.store import fetch_all, fetch_one, utc_now

_COLUMNS = """source, kind, key, pure_type, pure_uuid, pure_version, payload_hash, locked,
              changed_at, match_key"""


@dataclass(frozen=True)
class MappingRow:
    source: str
    kind: str
    key: str
    pure_type: str
    pure_uuid: str
    pure_version: str | None
    payload_hash: str  # empty: what Pure holds is unknown, the next change writes it
    locked: bool
    changed_at: str
    match_key: str | None = None  # how people lists elsewhere recognise this object


def _row(row: aiosqlite.Row) -> MappingRow:
    return MappingRow(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), row[8], row[9]
    )


async def get(conn: aiosqlite.Connection, source: str, kind: str, key: str) -> MappingRow | None:
    row = await fetch_one(
        conn,
        f"SELECT {_COLUMNS} FROM mapping WHERE source = ? AND kind = ? AND key = ?",  # noqa: S608 - fixed column list
        (source, kind, key),
    )
    return None if row is None else _row(row)


async def matching(
    conn: aiosqlite.Connection, source: str, kind: str, match_key: str
) -> list[MappingRow]:
    """The objects of a kind whose match key is this one (two or more: the key is ambiguous)."""
    rows = await fetch_all(
        conn,
        f"SELECT {_COLUMNS} FROM mapping WHERE source = ? AND kind = ? AND match_key = ?",  # noqa: S608 - fixed column list
        (source, kind, match_key),
    )
    return [_row(row) for row in rows]


async def of_pure_type(conn: aiosqlite.Connection, pure_type: str) -> list[MappingRow]:
    rows = await fetch_all(
        conn,
        f"SELECT {_COLUMNS} FROM mapping WHERE pure_type = ? ORDER BY source, kind, key",  # noqa: S608 - fixed column list
        (pure_type,),
    )
    return [_row(row) for row in rows]


async def put(conn: aiosqlite.Connection, *rows: MappingRow) -> None:
    now = utc_now()
    await conn.executemany(
        """INSERT INTO mapping (source, kind, key, pure_type, pure_uuid, pure_version, payload_hash,
                                locked, changed_at, match_key, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (source, kind, key) DO UPDATE SET pure_type = excluded.pure_type,
               pure_uuid = excluded.pure_uuid, pure_version = excluded.pure_version,
               payload_hash = excluded.payload_hash, locked = excluded.locked,
               changed_at = excluded.changed_at, match_key = excluded.match_key,
               updated_at = excluded.updated_at""",
        [
            (
                row.source,
                row.kind,
                row.key,
                row.pure_type,
                row.pure_uuid,
                row.pure_version,
                row.payload_hash,
                int(row.locked),
                row.changed_at,
                row.match_key,
                now,
            )
            for row in rows
        ],
    )


async def delete(conn: aiosqlite.Connection, source: str, kind: str, key: str) -> None:
    await conn.execute(
        "DELETE FROM mapping WHERE source = ? AND kind = ? AND key = ?", (source, kind, key)
    )


async def count(conn: aiosqlite.Connection) -> int:
    row = await fetch_one(conn, "SELECT COUNT(*) FROM mapping")
    return int(row[0]) if row else 0
