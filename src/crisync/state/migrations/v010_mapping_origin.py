"""Version 10: how the mapping came to its content: created by crisync, or found in the target.

Content crisync found (adopted: it writes and locks it; linked: it only refers to it) was
someone else's first, so a deletion in the source never deletes it. Every row written
before this version is content crisync created.
"""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
ALTER TABLE mapping ADD COLUMN origin TEXT NOT NULL DEFAULT 'created';
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
