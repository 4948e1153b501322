"""Version 12: backfill work told from ordinary changes, and the quota of an API for status.

`inbox.backfill` marks the events of a first pass, a re-read of a whole stream and
`resync --all`: outside the backfill window they wait while changes flow. Rows from before
this version are ordinary changes, as they were handled until now.
"""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
ALTER TABLE inbox ADD COLUMN backfill INTEGER NOT NULL DEFAULT 0;
-- Pending changes in arrival order: found past any number of waiting backfill events.
CREATE INDEX inbox_pending_changes ON inbox (id) WHERE state = 'pending' AND backfill = 0;

-- A row per API with an hourly quota, written by the daemon every few seconds: what
-- `crisync status` shows, and what the next start counts as already sent.
CREATE TABLE api_quotas (
    api            TEXT PRIMARY KEY,
    hourly_limit   INTEGER NOT NULL,
    used           INTEGER NOT NULL,  -- requests in the hour before recorded_at
    refills_at     TEXT,              -- ISO UTC: when a spent quota lets work go again
    recorded_at    TEXT NOT NULL
);

-- Why backfill work waits (outside its window, its share spent); no row: it may run.
CREATE TABLE backfill_hold (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    reason      TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
