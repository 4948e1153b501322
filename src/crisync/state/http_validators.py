"""HTTP validators (ETag, Last-Modified) by URL, for conditional GETs."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from crisync.state.store import fetch_one, utc_now


@dataclass(frozen=True)
class Validators:
    etag: str | None
    last_modified: str | None

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)


async def get(conn: aiosqlite.Connection, url: str) -> Validators | None:
    row = await fetch_one(
        conn, "SELECT etag, last_modified FROM http_validators WHERE url = ?", (url,)
    )
    return None if row is None else Validators(row[0], row[1])


async def put(conn: aiosqlite.Connection, url: str, validators: Validators) -> None:
    """Remember them; call it in the transaction that stores what the answer carried."""
    await conn.execute(
        """INSERT INTO http_validators (url, etag, last_modified, updated_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (url) DO UPDATE SET etag = excluded.etag,
               last_modified = excluded.last_modified, updated_at = excluded.updated_at""",
        (url, validators.etag, validators.last_modified, utc_now()),
    )


async def forget(conn: aiosqlite.Connection, url: str) -> None:
    await conn.execute("DELETE FROM http_validators WHERE url = ?", (url,))
