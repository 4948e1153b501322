"""Version 11: what crisync last wrote to the target, so that a change is one write.

`written` holds a short digest of each owned property as last written; `foreign_identifiers`
the other sources' identifiers the target content carried then (JSON), NULL when none, as
for most objects. Rows written before this version have neither: their next change reads
the content first, as before, and fills them in.
"""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
ALTER TABLE mapping ADD COLUMN written BLOB;
ALTER TABLE mapping ADD COLUMN foreign_identifiers TEXT;
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
