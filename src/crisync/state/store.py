"""The SQLite store: one connection, one writer, migrations at open."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from crisync.state.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 5000
T = TypeVar("T")


class SchemaTooNewError(Exception):
    """The database was written by a newer crisync; refusing beats corrupting it."""


class StateUnavailableError(Exception):
    """The state database cannot be used; the message says why and what to do, in one line."""

    def __init__(self, path: Path, cause: str, recovery: str) -> None:
        super().__init__(f"{cause}; {recovery}")
        self.path = path


class StateDiskFullError(StateUnavailableError):
    """A write found the disk (or SQLite's page limit) full; the transaction was rolled back."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path,
            f"the disk holding {path} is full",
            "free space there and start crisync again: nothing was lost, "
            "every write is one transaction",
        )


# What to do about a database whose content is damaged: the mapping is what must come back.
_REBUILD = (
    "restore a backup (docs/operations.md), or move it away and rebuild the mapping "
    "with `crisync reconcile` before crisync runs on an empty one"
)


def unavailable(path: Path, exc: Exception) -> StateUnavailableError:
    """The one place that turns a failure to open or write the state into its cause."""
    if isinstance(exc, OSError):
        return _file_system_failure(path, exc)
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL:
            return StateDiskFullError(path)
        if code == sqlite3.SQLITE_NOTADB:
            return StateUnavailableError(path, f"{path} is not an SQLite database", _REBUILD)
        if code == sqlite3.SQLITE_CORRUPT:
            return StateUnavailableError(path, f"{path} is corrupt or truncated", _REBUILD)
    return StateUnavailableError(
        path, f"SQLite cannot use {path} ({exc})", f"if the file is damaged: {_REBUILD}"
    )


def _file_system_failure(path: Path, exc: OSError) -> StateUnavailableError:
    where = exc.filename or path
    if exc.errno == errno.EISDIR:
        return StateUnavailableError(
            path,
            f"{where} is a directory, not a database file",
            "set [state] path to a file, or move the directory away",
        )
    if exc.errno == errno.EROFS:
        return StateUnavailableError(
            path,
            f"{where} is on a read-only file system",
            "put [state] path on a writable one (under systemd: StateDirectory=)",
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StateUnavailableError(
            path,
            f"no permission to write {where} ({exc.strerror})",
            f"give the user crisync runs as (uid {os.geteuid()}) write access to it "
            "and its directory (an immutable file shows an i in lsattr)",
        )
    if exc.errno == errno.ENOSPC:
        return StateDiskFullError(path)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST):
        return StateUnavailableError(
            path,
            f"its directory {path.parent} is missing and cannot be created ({where}: "
            f"{exc.strerror})",
            "create it, or set [state] path to a directory that exists",
        )
    return StateUnavailableError(path, f"{where}: {exc.strerror}", "fix that, then start again")


def check_access(path: Path) -> None:
    """Raise OSError unless crisync may write the database, its WAL files and its directory.

    SQLite opens a file it may not write read-only without a word, and says only "unable
    to open database file" about a directory; asking the file system first names the cause.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            os.close(os.open(file, os.O_RDWR))
    # SQLite creates the database, its -wal and its -shm file beside it.
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        # Named after the directory: the temporary file's name would only puzzle.
        raise OSError(exc.errno, exc.strerror, f"{path.parent}{os.sep}") from exc


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


class Queries(Protocol):
    """What a read needs of a connection: aiosqlite's, or the loop's own (Store.lookups)."""

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Iterable[sqlite3.Row]: ...


class LoopThreadReader:
    """Reads by key on the event loop's own thread, for the hot path (a handler's mapping
    row, its authors' rows, an external person).

    Each aiosqlite call is a round trip to its thread and back, which costs several times
    the CPU of a lookup by key (docs/benchmarks.md). Such a lookup takes microseconds, and
    a WAL reader waits for no writer, so the loop is not held up; scans, and everything
    that writes (a COMMIT waits for the disk), stay on aiosqlite's threads.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute_fetchall(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Iterable[sqlite3.Row]:
        # Async only to be a Queries: it fetches every row before returning, so no
        # statement is ever left open across an await.
        return self._conn.execute(sql, tuple(parameters or ())).fetchall()


async def fetch_one(
    conn: Queries, sql: str, parameters: tuple[object, ...] = ()
) -> sqlite3.Row | None:
    """One row in one call (on aiosqlite: execute + fetch + close would be three)."""
    rows = list(await conn.execute_fetchall(sql, parameters))
    return rows[0] if rows else None


async def fetch_all(
    conn: Queries, sql: str, parameters: tuple[object, ...] = ()
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
    """Writes go through one connection guarded by a lock; reads through a second one, and
    lookups by key on the hot path through a third, on the loop's thread (`lookups`).

    aiosqlite runs each of the first two in its own thread. The lock keeps one task's
    transaction from interleaving with another task's statements. WAL lets the
    read-only connection read the last committed state while a transaction is open,
    so reads never queue behind writes.
    """

    def __init__(
        self,
        path: Path,
        conn: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        lookups: LoopThreadReader,
    ) -> None:
        self.path = path
        self._conn = conn
        self._reader = reader
        self.lookups = lookups
        self._lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._in_transaction = False
        self._woken_at_the_end: list[asyncio.Event] = []

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Store]:
        """The store, migrated; StateUnavailableError (saying why) when it cannot be used."""
        async with contextlib.AsyncExitStack() as connections:
            try:
                check_access(path)
                # isolation_level=None: transactions are explicit BEGIN IMMEDIATE ... COMMIT.
                conn, reader = [
                    await connections.enter_async_context(
                        aiosqlite.connect(path, isolation_level=None)
                    )
                    for _ in range(2)
                ]
                for connection in (conn, reader):
                    connection.row_factory = aiosqlite.Row
                    await connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                # Takes effect in a new database only (before WAL writes its header): pages
                # freed there can be given back to the file system (give_back_free_pages).
                await conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = FULL")
                await conn.execute("PRAGMA foreign_keys = ON")
                await reader.execute("PRAGMA query_only = ON")
                lookups = sqlite3.connect(path, isolation_level=None)
                connections.callback(lookups.close)
                lookups.row_factory = sqlite3.Row
                lookups.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                lookups.execute("PRAGMA query_only = ON")
                store = cls(path, conn, reader, LoopThreadReader(lookups))
                await store._migrate()
            except (OSError, sqlite3.DatabaseError) as exc:
                raise unavailable(path, exc) from exc
            yield store

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT; any exception (cancellation too) rolls back.

        BEGIN, COMMIT and ROLLBACK run to their end before the lock is released, even when
        the task is cancelled meanwhile: the database thread carries them out anyway, and a
        transaction left open would be the next holder's. A full disk is raised as
        StateDiskFullError, which no loop mistakes for a failure of its own work.
        """
        async with self._lock, self._disk_full_said():
            self._in_transaction = True
            try:
                await _to_the_end(self._conn.execute("BEGIN IMMEDIATE"))
                yield self._conn
                # A COMMIT that fails (a full disk) leaves the transaction open: roll it back.
                await _to_the_end(self._conn.commit())
            except BaseException:
                if self._conn.in_transaction:
                    await _to_the_end(self._conn.rollback())
                raise
            finally:
                self._in_transaction = False
                woken, self._woken_at_the_end = self._woken_at_the_end, []
                for event in woken:
                    event.set()  # after a rollback too: a waiter that finds nothing waits on

    def wake_after_commit(self, event: asyncio.Event) -> None:
        """Set `event` when the open transaction ends (at once when none is open).

        A waiter woken before the COMMIT reads the state without the rows it was woken for,
        finds nothing, and sleeps on through a whole idle wait: outcomes reached MQTT a
        second late that way.
        """
        if self._in_transaction:
            self._woken_at_the_end.append(event)
        else:
            event.set()

    async def write(self, sql: str, parameters: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """One statement in a transaction of its own, in one round trip; RETURNING rows."""
        async with self._lock, self._disk_full_said():
            return list(await _to_the_end(self._conn.execute_fetchall(sql, parameters)))

    async def give_back_free_pages(self) -> None:
        """Shrink the file by its free pages (those of done events' payloads, say); a
        database made before auto_vacuum was set keeps them, and reuses them."""
        async with self._lock, self._disk_full_said():
            # executescript: the pragma frees one page per step, and execute() steps once.
            await _to_the_end(self._conn.executescript("PRAGMA incremental_vacuum"))

    @asynccontextmanager
    async def _disk_full_said(self) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise StateDiskFullError(self.path) from exc
            raise

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
