"""The SQLite store: one connection, one writer, migrations at open."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import aiosqlite

from crisync.state.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 5000
T = TypeVar("T")


class SchemaTooNewError(Exception):
    """The database was written by a newer crisync; refusing beats corrupting it."""


async def _to_the_end(operation: Awaitable[T]) -> T:
    """Await `operation` until it is done; a cancellation meanwhile is re-raised after."""
    task = asyncio.ensure_future(operation)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    result = task.result()
    if cancelled:
        raise asyncio.CancelledError
    return result


async def fetch_one(
    conn: aiosqlite.Connection, sql: str, parameters: tuple[object, ...] = ()
) -> sqlite3.Row | None:
    """One row in one round trip to the database thread (execute + fetch + close are three)."""
    rows = list(await conn.execute_fetchall(sql, parameters))
    return rows[0] if rows else None


async def fetch_all(
    conn: aiosqlite.Connection, sql: str, parameters: tuple[object, ...] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, parameters))


def utc_now() -> str:
    return iso_utc(datetime.now(UTC))


def iso_utc(moment: datetime) -> str:
    """One text form for every stored instant, so that text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class Store:
    """Writes go through one connection guarded by a lock; reads through a second one.

    aiosqlite runs each connection in its own thread. The lock keeps one task's
    transaction from interleaving with another task's statements. WAL lets the
    read-only connection read the last committed state while a transaction is open,
    so reads never queue behind writes.
    """

    def __init__(self, conn: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._conn = conn
        self._reader = reader
        self._lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Store]:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit BEGIN IMMEDIATE ... COMMIT.
        async with (
            aiosqlite.connect(path, isolation_level=None) as conn,
            aiosqlite.connect(path, isolation_level=None) as reader,
        ):
            for connection in (conn, reader):
                connection.row_factory = aiosqlite.Row
                await connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await reader.execute("PRAGMA query_only = ON")
            store = cls(conn, reader)
            await store._migrate()
            yield store

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT; any exception (cancellation too) rolls back.

        BEGIN, COMMIT and ROLLBACK run to their end before the lock is released, even when
        the task is cancelled meanwhile: the database thread carries them out anyway, and a
        transaction left open would be the next holder's.
        """
        async with self._lock:
            try:
                await _to_the_end(self._conn.execute("BEGIN IMMEDIATE"))
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    await _to_the_end(self._conn.rollback())
                raise
            await _to_the_end(self._conn.commit())

    async def write(self, sql: str, parameters: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """One statement in a transaction of its own, in one round trip; RETURNING rows."""
        async with self._lock:
            return list(await _to_the_end(self._conn.execute_fetchall(sql, parameters)))

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The read-only connection: what is committed, outside anyone's transaction.

        Its own lock keeps readers' statements apart: a statement left open across an
        await would hold its snapshot, and another reader's statements would share it.
        """
        async with self._read_lock:
            yield self._reader

    async def schema_version(self) -> int:
        async with self.reading() as conn:
            return await _read_version(conn)

    async def _migrate(self) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
        current = await self.schema_version()
        if current > len(MIGRATIONS):
            raise SchemaTooNewError(
                f"the state database has schema version {current}, newer than this crisync "
                f"knows ({len(MIGRATIONS)}); run the crisync release that wrote it, or a later one"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            async with self.transaction() as conn:
                await MIGRATIONS[version - 1](conn)
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


async def _read_version(conn: aiosqlite.Connection) -> int:
    row = await fetch_one(conn, "SELECT version FROM schema_version")
    return int(row[0]) if row else 0
