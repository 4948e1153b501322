"""Version 8: the mapping names its target, no column is named after one target, and an
object's kind can be found from its key.

Every row written before this version is Pure content: its target is `pure`.
"""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
ALTER TABLE mapping RENAME COLUMN pure_type TO target_type;
ALTER TABLE mapping RENAME COLUMN pure_uuid TO target_uuid;
ALTER TABLE mapping RENAME COLUMN pure_version TO target_version;
ALTER TABLE mapping ADD COLUMN target TEXT NOT NULL DEFAULT 'pure';
ALTER TABLE create_intents RENAME COLUMN pure_type TO target_type;
ALTER TABLE external_persons RENAME COLUMN pure_uuid TO target_uuid;
-- A source whose kinds its deletions do not name (Unicat records) finds them by key.
CREATE INDEX mapping_source_key ON mapping (source, key);
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
