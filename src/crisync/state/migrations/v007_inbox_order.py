"""Version 7: indexes to find ready work without reading every pending event."""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
-- Pending events in arrival order: the claim walks it and stops after the events it needs.
CREATE INDEX inbox_pending_order ON inbox (id) WHERE state = 'pending';
-- The earliest retry, found without reading the events that wait for none.
CREATE INDEX inbox_retry ON inbox (not_before) WHERE state = 'pending' AND not_before IS NOT NULL;
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
