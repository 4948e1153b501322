"""The mapping: source object ↔ the target content it became, with what was last written."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import aiosqlite

from crisync.state import epoch
from crisync.state.store import Queries, fetch_all, fetch_one, iso_utc

_COLUMNS = """source, kind, key, target, target_type, target_uuid, target_version, payload_hash,
              locked, changed_at, match_key, origin, written, foreign_identifiers"""

# How a mapping came to its content: crisync created it, or found it there (and took it
# over, or only refers to it). Found content is never deleted because its source object was.
Origin = Literal["created", "adopted", "linked"]


@dataclass(frozen=True)
class MappingRow:
    source: str
    kind: str
    key: str
    target: str  # the target that holds the content
    target_type: str  # its content type there
    target_uuid: str
    target_version: str | None
    # 16 bytes of the mapped payload's digest; empty: what the target holds is unknown, the
    # next change writes it.
    payload_hash: bytes
    locked: bool
    changed_at: str  # ISO UTC (stored as microseconds since the epoch)
    match_key: str | None = None  # how people lists elsewhere recognise this object
    origin: Origin = "created"
    # What crisync last wrote there, compactly (the target's own form); None: unknown, the
    # next write reads the content first.
    written: bytes | None = None
    # Other sources' identifiers the content carried at that write.
    foreign_identifiers: tuple[dict[str, Any], ...] = ()


def _row(row: aiosqlite.Row) -> MappingRow:
    return MappingRow(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        bool(row[8]),
        iso_utc(epoch.from_microseconds(row[9])),
        row[10],
        cast("Origin", row[11]),
        row[12],
        tuple(json.loads(row[13])) if row[13] else (),
    )


async def get(conn: Queries, source: str, kind: str, key: str) -> MappingRow | None:
    row = await fetch_one(
        conn,
        f"SELECT {_COLUMNS} FROM mapping WHERE source = ? AND kind = ? AND key = ?",  # noqa: S608 - fixed column list
        (source, kind, key),
    )
    return None if row is None else _row(row)


async def get_many(conn: Queries, source: str, kind: str, keys: list[str]) -> dict[str, MappingRow]:
    """The rows of these keys that exist, by key, in one statement."""
    rows = await fetch_all(
        conn,
        f"SELECT {_COLUMNS} FROM mapping WHERE source = ? AND kind = ?"  # noqa: S608 - fixed column list
        " AND key IN (SELECT value FROM json_each(?))",
        (source, kind, json.dumps(keys)),
    )
    return {row.key: row for row in map(_row, rows)}


# Through the primary key, a kind at a time: no index on (source, key) for this one query.
KIND_OF = """SELECT kind FROM mapping
             WHERE source = ? AND kind IN (SELECT value FROM json_each(?)) AND key = ? LIMIT 1"""


async def kind_of(
    conn: aiosqlite.Connection, source: str, kinds: Iterable[str], key: str
) -> str | None:
    """The kind, one of `kinds`, under which an object of this source is mapped, if it is."""
    row = await fetch_one(conn, KIND_OF, (source, json.dumps(list(kinds)), key))
    return None if row is None else str(row[0])


async def of_target_uuid(conn: Queries, target: str, uuid: str) -> list[MappingRow]:
    """The objects replicated to this content (more than one only after a merge in the target)."""
    rows = await fetch_all(
        conn,
        f"SELECT {_COLUMNS} FROM mapping WHERE target = ? AND target_uuid = ?",  # noqa: S608 - fixed column list
        (target, uuid),
    )
    return [_row(row) for row in rows]


async def matching(conn: Queries, source: str, kind: str, match_key: str) -> list[MappingRow]:
    """The objects of a kind whose match key is this one (two or more: the key is ambiguous)."""
    rows = await fetch_all(
        conn,
        f"SELECT {_COLUMNS} FROM mapping WHERE source = ? AND kind = ? AND match_key = ?",  # noqa: S608 - fixed column list
        (source, kind, match_key),
    )
    return [_row(row) for row in rows]


async def of_target_type(
    conn: aiosqlite.Connection, target: str, target_type: str
) -> list[MappingRow]:
    rows = await fetch_all(
        conn,
        f"SELECT {_COLUMNS} FROM mapping WHERE target = ? AND target_type = ?"  # noqa: S608 - fixed column list
        " ORDER BY source, kind, key",
        (target, target_type),
    )
    return [_row(row) for row in rows]


async def keys(
    conn: aiosqlite.Connection, source: str | None = None, kind: str | None = None
) -> list[tuple[str, str, str]]:
    """(source, kind, key) of the mapped objects, of a source and a kind when given."""
    rows = await fetch_all(
        conn,
        """SELECT source, kind, key FROM mapping
           WHERE (? IS NULL OR source = ?) AND (? IS NULL OR kind = ?)
           ORDER BY source, kind, key""",
        (source, source, kind, kind),
    )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


async def put(conn: aiosqlite.Connection, *rows: MappingRow) -> None:
    await conn.executemany(
        """INSERT INTO mapping (source, kind, key, target, target_type, target_uuid, target_version,
                                payload_hash, locked, changed_at, match_key, origin, written,
                                foreign_identifiers)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (source, kind, key) DO UPDATE SET target = excluded.target,
               target_type = excluded.target_type, target_uuid = excluded.target_uuid,
               target_version = excluded.target_version,
               payload_hash = excluded.payload_hash, locked = excluded.locked,
               changed_at = excluded.changed_at, match_key = excluded.match_key,
               origin = excluded.origin, written = excluded.written,
               foreign_identifiers = excluded.foreign_identifiers""",
        [
            (
                row.source,
                row.kind,
                row.key,
                row.target,
                row.target_type,
                row.target_uuid,
                row.target_version,
                row.payload_hash,
                int(row.locked),
                epoch.microseconds(datetime.fromisoformat(row.changed_at)),
                row.match_key,
                row.origin,
                row.written,
                json.dumps(row.foreign_identifiers) if row.foreign_identifiers else None,
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
