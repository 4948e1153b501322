"""Version 6: HTTP validators, so that an unchanged resource is answered by a 304."""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
-- The ETag and Last-Modified of the last answer whose content crisync has durably used.
CREATE TABLE http_validators (
    url           TEXT PRIMARY KEY,
    etag          TEXT,
    last_modified TEXT,            -- the header as the server wrote it (an HTTP date)
    updated_at    TEXT NOT NULL
);
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
