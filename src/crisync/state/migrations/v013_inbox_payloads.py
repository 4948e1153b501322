"""Version 13: an event's payload in a table of its own, gone once the event is done.

A done event's row stays a day, to drop the feeds' repeats of it; its payload (the whole
object, kilobytes with its relationships) was emptied in place, which left the row alone
on a page that was mostly empty for that day. Apart, a payload's pages are freed when its
event is done and reused by the next ones (or given back to the file system, see
Store.give_back_free_pages). Pending and dead events keep their payload.
"""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
CREATE TABLE inbox_payloads (
    id      INTEGER PRIMARY KEY REFERENCES inbox (id) ON DELETE CASCADE,
    payload TEXT NOT NULL  -- JSON: the object as the listener read it
);
INSERT INTO inbox_payloads (id, payload) SELECT id, payload FROM inbox WHERE state != 'done';
ALTER TABLE inbox DROP COLUMN payload;
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
