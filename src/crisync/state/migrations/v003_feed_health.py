"""Version 3: what feed health needs: last poll, parking, and retained payloads to republish."""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
-- When the feed was last polled, whatever the result.
ALTER TABLE cursors ADD COLUMN last_poll TEXT;
-- A feed whose credentials were refused waits until then instead of hammering the API.
ALTER TABLE cursors ADD COLUMN parked_until TEXT;

-- The last retained payload per topic, to publish again after a reconnect.
CREATE TABLE retained (
    topic      TEXT PRIMARY KEY,
    payload    TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
