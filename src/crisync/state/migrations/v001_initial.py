"""Version 1: cursors, inbox, mapping, outbox, dead letters."""

from __future__ import annotations

import aiosqlite

from crisync.state.migrations.script import execute_script

SCHEMA = """
CREATE TABLE cursors (
    feed          TEXT PRIMARY KEY,
    high_water    TEXT,            -- ISO UTC: the server time when the last complete sweep began
    sweep_started TEXT,            -- ISO UTC: server time at the start of the sweep in progress
    next_url      TEXT,            -- next page of the sweep in progress; NULL between sweeps
    last_error    TEXT,
    updated_at    TEXT NOT NULL
);

-- Every change a listener saw, deduplicated. Rows stay after processing to drop lookback repeats.
CREATE TABLE inbox (
    id           INTEGER PRIMARY KEY,
    feed         TEXT NOT NULL,
    source       TEXT NOT NULL,    -- elements | unicat
    kind         TEXT NOT NULL,    -- publication, user, ...
    key          TEXT NOT NULL,    -- the object's id in the source
    action       TEXT NOT NULL CHECK (action IN ('upsert', 'delete')),
    changed_at   TEXT NOT NULL,    -- ISO UTC: when the source says the object last changed
    observed_at  TEXT NOT NULL,
    payload      TEXT NOT NULL,    -- JSON: the object as the listener read it
    state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    not_before   TEXT,             -- ISO UTC: a retriable failure waits until then
    UNIQUE (feed, key, changed_at)
);
CREATE INDEX inbox_pending ON inbox (source, kind, key, id) WHERE state = 'pending';
CREATE INDEX inbox_observed ON inbox (observed_at) WHERE state != 'pending';

CREATE TABLE mapping (
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    pure_type    TEXT NOT NULL,
    pure_uuid    TEXT NOT NULL,
    pure_version TEXT,
    payload_hash TEXT NOT NULL,
    locked       INTEGER NOT NULL DEFAULT 0,
    changed_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (source, kind, key)
);
CREATE INDEX mapping_uuid ON mapping (pure_uuid);

-- Outcomes waiting for the broker's acknowledgement.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    topic      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    retain     INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE dead_letters (
    inbox_id    INTEGER PRIMARY KEY REFERENCES inbox (id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    error_class TEXT NOT NULL,
    status      INTEGER,
    message     TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    failed_at   TEXT NOT NULL
);
"""


async def upgrade(conn: aiosqlite.Connection) -> None:
    await execute_script(conn, SCHEMA)
