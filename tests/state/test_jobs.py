"""The jobs table and the Unicat sync cursors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crisync.state import jobs, sync_cursors
from crisync.state.jobs import Job
from crisync.state.store import Store
from crisync.state.sync_cursors import SyncCursor

FEED = "unicat:3f6c1a9e-8b2d-4e57-9c1a-6d0b2e4f8a13"


def a_job(token: str, **changes: object) -> Job:
    job = Job(
        token=token,
        feed=FEED,
        job="bulk_save_as_new_schema_items",
        status="processing",
        total=10,
        remaining=4,
        error=None,
        created_at="2026-11-22T08:00:00.000000+00:00",
        updated_at="2026-11-22T08:00:05.000000+00:00",
        cursor=4012,
        progressed_at="2026-11-22T08:00:05.100000+00:00",
        stalled=False,
    )
    return replace(job, **changes)  # type: ignore[arg-type]


async def test_a_job_is_stored_and_read_back_whole(store: Store) -> None:
    job = a_job("a", stalled=True, error="locked")
    async with store.transaction() as conn:
        await jobs.put(conn, job)
        assert await jobs.get(conn, "a") == job
        assert await jobs.get(conn, "b") is None
        await jobs.put(conn, replace(job, status="done", remaining=0))
        assert (await jobs.get(conn, "a")) == replace(job, status="done", remaining=0)
        assert await jobs.all_jobs(conn) == [replace(job, status="done", remaining=0)]


async def test_an_unknown_status_is_refused_by_the_table(store: Store) -> None:
    with pytest.raises(Exception, match="CHECK constraint"):
        async with store.transaction() as conn:
            await jobs.put(conn, a_job("a", status="paused"))


async def test_quiet_jobs_are_the_unfinished_unreported_ones_of_the_feed(store: Store) -> None:
    old, recent = "2026-11-22T08:00:00.000000+00:00", "2026-11-22T09:00:00.000000+00:00"
    async with store.transaction() as conn:
        await jobs.put(conn, a_job("quiet-processing", progressed_at=old))
        await jobs.put(conn, a_job("quiet-queued", status="queued", progressed_at=old))
        await jobs.put(conn, a_job("recent", progressed_at=recent))
        await jobs.put(conn, a_job("done", status="done", progressed_at=old))
        await jobs.put(conn, a_job("rejected", status="rejected", progressed_at=old))
        await jobs.put(conn, a_job("reported", stalled=True, progressed_at=old))
        await jobs.put(conn, a_job("other-feed", feed="unicat:other", progressed_at=old))
        quiet = await jobs.quiet_since(conn, FEED, "2026-11-22T08:30:00.000000+00:00")
    assert {job.token for job in quiet} == {"quiet-processing", "quiet-queued"}
    assert not any(job.finished for job in quiet)


async def test_sync_cursors_start_at_zero_and_keep_what_was_saved(store: Store) -> None:
    async with store.transaction() as conn:
        assert await sync_cursors.get(conn, FEED) == SyncCursor(FEED, 0, 0, None)
        await sync_cursors.save(conn, SyncCursor(FEED, 4012, 8133, "2026.09.001"))
        await sync_cursors.save(conn, SyncCursor(FEED, 4013, 8133, "2026.09.001"))
        await sync_cursors.save(conn, SyncCursor("unicat:other", 1, 2, None))
    async with store.reading() as conn:
        assert await sync_cursors.get(conn, FEED) == SyncCursor(FEED, 4013, 8133, "2026.09.001")
