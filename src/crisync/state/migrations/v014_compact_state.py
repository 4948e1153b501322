"""Version 14: the state database at about a third of its size per object.

- A done event leaves the inbox for `inbox_done`, a compact record of what its repeats need
  to be recognised by: the object, the feed, the source's change time and when it was
  observed, the times as integers (microseconds and seconds since the epoch). A done inbox
  row with its two indexes took about 260 bytes; this record takes about 50. No index on
  the observed time: the hourly prune reads the table through, which is a day's events.
- The mapping's payload hash is the first 16 bytes of the SHA-256 digest (it was the whole
  digest in hex: 64 characters), its change time an integer (microseconds since the epoch),
  its `updated_at` goes (nothing read it), and so does the index on (source, key): the one
  query that used it names the kinds the key may be of.
- External persons lose their `updated_at` (nothing read it) and are stored in the order of
  their name key, without a rowid beside it.

Nothing else is lost: every done event, mapping row and external person is carried over.
"""

from __future__ import annotations

import aiosqlite

from crisync.state.epoch import SQL_MICROSECONDS, SQL_SECONDS
from crisync.state.migrations.script import execute_script

SCHEMA = f"""
-- What a done event leaves: enough to drop a feed's repeat of it (the inbox's unique key,
-- with the object's source and kind in front so that an object's done events are found too).
CREATE TABLE inbox_done (
    source      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    feed        TEXT NOT NULL,
    changed_at  INTEGER NOT NULL,  -- microseconds since the epoch, as the source says
    observed_at INTEGER NOT NULL,  -- seconds since the epoch
    PRIMARY KEY (source, kind, key, feed, changed_at)
) WITHOUT ROWID;
INSERT INTO inbox_done (source, kind, key, feed, changed_at, observed_at)
    SELECT source, kind, key, feed, {SQL_MICROSECONDS.format("changed_at")},
           {SQL_SECONDS.format("observed_at")}
    FROM inbox WHERE state = 'done';
DELETE FROM inbox WHERE state = 'done';
-- It served the prune of done events only; dead ones stay until they are retried.
DROP INDEX inbox_observed;

CREATE TABLE mapping_compact (
    source              TEXT NOT NULL,
    kind                TEXT NOT NULL,
    key                 TEXT NOT NULL,
    target              TEXT NOT NULL,
    target_type         TEXT NOT NULL,
    target_uuid         TEXT NOT NULL,
    target_version      TEXT,
    payload_hash        BLOB NOT NULL,  -- 16 bytes; empty: what the target holds is unknown
    locked              INTEGER NOT NULL DEFAULT 0,
    changed_at          INTEGER NOT NULL,  -- microseconds since the epoch, as the source says
    match_key           TEXT,
    origin              TEXT NOT NULL DEFAULT 'created',
    written             BLOB,
    foreign_identifiers TEXT,
    PRIMARY KEY (source, kind, key)
);
INSERT INTO mapping_compact
    SELECT source, kind, key, target, target_type, target_uuid, target_version, payload_hash,
           locked, {SQL_MICROSECONDS.format("changed_at")}, match_key, origin, written,
           foreign_identifiers
    FROM mapping ORDER BY rowid;
DROP TABLE mapping;
ALTER TABLE mapping_compact RENAME TO mapping;
CREATE INDEX mapping_uuid ON mapping (target_uuid);
CREATE INDEX mapping_match_key ON mapping (source, kind, match_key) WHERE match_key IS NOT NULL;

CREATE TABLE external_persons_compact (
    name_key    TEXT PRIMARY KEY,
    target_uuid TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO external_persons_compact SELECT name_key, target_uuid FROM external_persons;
DROP TABLE external_persons;
ALTER TABLE external_persons_compact RENAME TO external_persons;
"""  # noqa: S608 - fixed expressions


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
    # Hex to bytes in Python: SQLite's unhex() is younger than some SQLite crisync runs on.
    hashes = await conn.execute_fetchall(
        "SELECT rowid, payload_hash FROM mapping WHERE typeof(payload_hash) = 'text'"
    )
    await conn.executemany(
        "UPDATE mapping SET payload_hash = ? WHERE rowid = ?",
        [(bytes.fromhex(str(text))[:16], rowid) for rowid, text in hashes],
    )
