"""Version 9: the APIs whose circuit is open, so that `crisync status` can say what waits."""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
-- A row while an API is out; the dispatcher deletes it when the API answers again.
CREATE TABLE api_circuits (
    api TEXT PRIMARY KEY,
    opened_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    routes TEXT NOT NULL,          -- JSON list of "source/kind" whose events wait for it
    probes_failed INTEGER NOT NULL DEFAULT 0,
    next_probe_at TEXT
);
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
