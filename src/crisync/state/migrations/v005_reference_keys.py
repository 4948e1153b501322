"""Version 5: what references need: persons' match keys and the external persons crisync uses."""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
-- How people lists in other objects recognise a mapped person (a mapping's reference_key).
ALTER TABLE mapping ADD COLUMN match_key TEXT;
CREATE INDEX mapping_match_key ON mapping (source, kind, match_key) WHERE match_key IS NOT NULL;

-- External persons crisync created or found in Pure, by normalised name: one per name,
-- shared by every object that lists that name.
CREATE TABLE external_persons (
    name_key   TEXT PRIMARY KEY,
    pure_uuid  TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
