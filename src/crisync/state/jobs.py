"""Unicat jobs: the background operations whose progress arrives as sync events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import aiosqlite

from crisync.state.store import fetch_all, fetch_one

JobStatus = Literal["queued", "rejected", "processing", "done"]
JOB_STATUSES: frozenset[str] = frozenset(get_args(JobStatus))
UNFINISHED: tuple[JobStatus, ...] = ("queued", "processing")


@dataclass(frozen=True)
class Job:
    token: str
    feed: str
    job: str  # what the job does, e.g. bulk_save_as_new_schema_items
    status: JobStatus
    total: int | None
    remaining: int | None
    error: str | None  # Unicat's reason for a rejection
    created_at: str  # ISO UTC, Unicat's clock
    updated_at: str  # ISO UTC, Unicat's clock
    cursor: int  # the sync cursor of the event applied last
    progressed_at: str  # ISO UTC, local clock: when status or remaining last changed
    stalled: bool

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


COLUMNS = (
    "token, feed, job, status, total, remaining, error, created_at, updated_at, cursor, "
    "progressed_at, stalled"
)


def _job(row: aiosqlite.Row) -> Job:
    values = dict(zip(row.keys(), row, strict=True))
    values["stalled"] = bool(values["stalled"])
    return Job(**values)


async def get(conn: aiosqlite.Connection, token: str) -> Job | None:
    row = await fetch_one(conn, f"SELECT {COLUMNS} FROM jobs WHERE token = ?", (token,))  # noqa: S608 - a constant column list
    return None if row is None else _job(row)


async def put(conn: aiosqlite.Connection, job: Job) -> None:
    await conn.execute(
        f"""INSERT OR REPLACE INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",  # noqa: S608 - a constant column list
        (
            job.token,
            job.feed,
            job.job,
            job.status,
            job.total,
            job.remaining,
            job.error,
            job.created_at,
            job.updated_at,
            job.cursor,
            job.progressed_at,
            int(job.stalled),
        ),
    )


async def quiet_since(conn: aiosqlite.Connection, feed: str, before: str) -> list[Job]:
    """Unfinished jobs of a feed, not yet reported stalled, without progress since `before`."""
    rows = await fetch_all(
        conn,
        f"""SELECT {COLUMNS} FROM jobs
            WHERE feed = ? AND status IN ('queued', 'processing') AND stalled = 0
              AND progressed_at < ?
            ORDER BY progressed_at""",  # noqa: S608 - a constant column list
        (feed, before),
    )
    return [_job(row) for row in rows]


async def finished_before(conn: aiosqlite.Connection, feed: str, before: str) -> list[Job]:
    """Finished jobs of a feed whose last change (on the local clock) came before `before`."""
    rows = await fetch_all(
        conn,
        f"""SELECT {COLUMNS} FROM jobs
            WHERE feed = ? AND status NOT IN ('queued', 'processing') AND progressed_at < ?
            ORDER BY progressed_at""",  # noqa: S608 - a constant column list
        (feed, before),
    )
    return [_job(row) for row in rows]


async def delete(conn: aiosqlite.Connection, tokens: Sequence[str]) -> None:
    await conn.executemany("DELETE FROM jobs WHERE token = ?", [(token,) for token in tokens])


async def all_jobs(conn: aiosqlite.Connection) -> list[Job]:
    rows = await fetch_all(conn, f"SELECT {COLUMNS} FROM jobs ORDER BY created_at")  # noqa: S608 - a constant column list
    return [_job(row) for row in rows]
