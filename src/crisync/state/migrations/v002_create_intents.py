"""Version 2: create intents, so that a create whose answer was lost is found, not repeated."""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
-- Written before a Pure create, removed with the mapping that records its result.
-- A row left behind means a create may have happened without crisync learning the uuid.
CREATE TABLE create_intents (
    source     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    pure_type  TEXT NOT NULL,
    id_source  TEXT NOT NULL,
    primary_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    PRIMARY KEY (source, kind, key)
);
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
