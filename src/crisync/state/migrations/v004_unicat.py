"""Version 4: Unicat's two sync cursors per feed, and the Unicat jobs crisync has seen."""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
-- A Unicat sync stream's position: the global (cc) cursor, the project cursor, the server version.
CREATE TABLE sync_cursors (
    feed       TEXT PRIMARY KEY,
    cc_cursor  INTEGER NOT NULL DEFAULT 0,
    cursor     INTEGER NOT NULL DEFAULT 0,
    cc_version TEXT,
    updated_at TEXT NOT NULL
);

-- Unicat background jobs (bulk operations), as their sync events report them.
CREATE TABLE jobs (
    token         TEXT PRIMARY KEY,   -- Unicat's job.token
    feed          TEXT NOT NULL,
    job           TEXT NOT NULL,      -- e.g. bulk_save_as_new_schema_items
    status        TEXT NOT NULL CHECK (status IN ('queued', 'rejected', 'processing', 'done')),
    total         INTEGER,
    remaining     INTEGER,
    error         TEXT,               -- what Unicat said about a rejection
    created_at    TEXT NOT NULL,      -- ISO UTC, Unicat's created_on
    updated_at    TEXT NOT NULL,      -- ISO UTC, Unicat's updated_on
    cursor        INTEGER NOT NULL,   -- the sync cursor of the event applied last
    progressed_at TEXT NOT NULL,      -- ISO UTC, local: when status or remaining last changed
    stalled       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_unfinished ON jobs (progressed_at) WHERE status IN ('queued', 'processing');
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
