"""Unicat jobs: sync events about background operations, kept in the jobs table and on MQTT.

A job event (``data_type == "jobs"``, on the global stream) carries the job's status
(queued | rejected | processing | done), ``info.total``/``info.remaining`` and Unicat's
``created_on``/``updated_on``. Each job remembers the cursor of the event applied last,
so an event seen again (jobs are never skipped by the stream cursors) changes nothing.

With MQTT on, every change is written to the retained topic ``{prefix}/jobs/{token}``,
in the same transaction as the table:

    {"schema": "crisync.job/1", "token", "status", "total", "remaining",
     "created_at", "updated_at", "stalled"}

(``created_at``/``updated_at`` are Unicat's, ISO 8601 UTC; ``total``/``remaining`` may be
null). A job without progress for ``job_stall_after`` seconds, counted on crisync's own
clock, is reported once with ``"stalled": true``; its next event clears that. A rejected
job is also a failure: an outcome with action ``failed`` on
``{prefix}/outcomes/unicat/jobs/{token}``.

A finished job (done or rejected) is forgotten ``job_retain_for`` seconds after it
finished, on crisync's clock: an empty retained message clears its topic at the broker,
and its rows go from the jobs and retained tables, so neither grows with every job ever
run and a reconnect republishes only recent ones. (Should Unicat replay the whole stream,
after error 1006, a forgotten job comes back and is forgotten again after that time.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import structlog

from crisync.errors import PermanentError
from crisync.outcome import object_outcome_payload, object_outcome_topic, topic_level
from crisync.state import jobs, outbox
from crisync.state.jobs import JOB_STATUSES, Job, JobStatus
from crisync.state.store import iso_utc

log = structlog.get_logger("crisync.listener.unicat")

JOB_SCHEMA = "crisync.job/1"


@dataclass(frozen=True)
class JobEvent:
    """One sync item about a job, as read from the stream."""

    token: str
    cursor: int
    job: str
    status: JobStatus
    total: int | None
    remaining: int | None
    error: str | None
    created_at: str
    updated_at: str


def read_job_event(item: dict[str, Any], observed_at: datetime) -> JobEvent | None:
    """The job event in a sync item, or None (with a warning) when it is not one we understand."""
    data = item.get("data")
    status = data.get("status") if isinstance(data, dict) else None
    if not isinstance(data, dict) or status not in JOB_STATUSES:
        log.warning("unicat.job_event_unreadable", token=item.get("data_key"), status=status)
        return None
    info = data.get("info")
    if not isinstance(info, dict):
        info = {}
    error = info.get("error")
    return JobEvent(
        token=str(item["data_key"]),
        cursor=item["cursor"],
        job=str(data.get("job") or "unknown"),
        status=status,
        total=_count(info.get("total")),
        remaining=_count(info.get("remaining")),
        error=None if error is None else str(error),
        created_at=_instant(data.get("created_on"), observed_at),
        updated_at=_instant(data.get("updated_on"), observed_at),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _instant(epoch: Any, fallback: datetime) -> str:
    if isinstance(epoch, int | float) and not isinstance(epoch, bool):
        return iso_utc(datetime.fromtimestamp(epoch, UTC))
    return iso_utc(fallback)


def job_topic(prefix: str, token: str) -> str:
    return f"{prefix}/jobs/{topic_level(token)}"


def job_payload(job: Job) -> str:
    return json.dumps(
        {
            "schema": JOB_SCHEMA,
            "token": job.token,
            "status": job.status,
            "total": job.total,
            "remaining": job.remaining,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "stalled": job.stalled,
        },
        separators=(",", ":"),
    )


class JobTracker:
    """Applies job events and stall checks inside the listener's transactions."""

    def __init__(
        self,
        feed: str,
        *,
        topic_prefix: str | None,
        stall_after: float,
        retain_for: float,
        outbox_written: Callable[[], None],
    ) -> None:
        self._feed = feed
        self._prefix = topic_prefix
        self._stall_after = timedelta(seconds=stall_after)
        self._retain_for = timedelta(seconds=retain_for)
        # Wakes the publisher once the listener's transaction commits what it queued.
        self._outbox_written = outbox_written

    async def apply(
        self, conn: aiosqlite.Connection, events: list[JobEvent], observed_at: datetime
    ) -> int:
        """Apply what is new; returns how many events changed a job."""
        applied = 0
        for event in events:
            previous = await jobs.get(conn, event.token)
            if previous is not None and event.cursor <= previous.cursor:
                continue
            progressed_at, stalled = iso_utc(observed_at), False
            if previous is not None and (previous.status, previous.remaining) == (
                event.status,
                event.remaining,
            ):
                progressed_at, stalled = previous.progressed_at, previous.stalled
            job = Job(
                token=event.token,
                feed=self._feed,
                job=event.job,
                status=event.status,
                total=event.total,
                remaining=event.remaining,
                error=event.error,
                created_at=event.created_at,
                updated_at=event.updated_at,
                cursor=event.cursor,
                progressed_at=progressed_at,
                stalled=stalled,
            )
            await jobs.put(conn, job)
            applied += 1
            log.info(
                "unicat.job",
                token=job.token,
                job=job.job,
                status=job.status,
                total=job.total,
                remaining=job.remaining,
            )
            await self._publish(conn, job)
            if job.status == "rejected" and (previous is None or previous.status != "rejected"):
                await self._publish_rejection(conn, job, observed_at)
        return applied

    async def mark_stalled(self, conn: aiosqlite.Connection, now: datetime) -> list[Job]:
        """Report, once, each unfinished job that has made no progress for too long."""
        quiet = await jobs.quiet_since(conn, self._feed, iso_utc(now - self._stall_after))
        stalled = [replace(job, stalled=True) for job in quiet]
        for job in stalled:
            await jobs.put(conn, job)
            log.warning(
                "unicat.job_stalled",
                token=job.token,
                job=job.job,
                status=job.status,
                remaining=job.remaining,
                since=job.progressed_at,
            )
            await self._publish(conn, job)
        return stalled

    async def forget_finished(self, conn: aiosqlite.Connection, now: datetime) -> list[str]:
        """Clear the retained topic and drop the row of each job finished `retain_for` ago."""
        tokens = [
            job.token
            for job in await jobs.finished_before(conn, self._feed, iso_utc(now - self._retain_for))
        ]
        if not tokens:
            return []
        await jobs.delete(conn, tokens)
        if self._prefix is not None:
            topics = [job_topic(self._prefix, token) for token in tokens]
            await outbox.clear_retained(conn, topics)
            self._outbox_written()
        log.info("unicat.jobs_forgotten", tokens=tokens)
        return tokens

    async def _publish(self, conn: aiosqlite.Connection, job: Job) -> None:
        if self._prefix is None:
            return
        await outbox.add(conn, job_topic(self._prefix, job.token), job_payload(job), retain=True)
        self._outbox_written()

    async def _publish_rejection(
        self, conn: aiosqlite.Connection, job: Job, observed_at: datetime
    ) -> None:
        log.error("unicat.job_rejected", token=job.token, job=job.job, reason=job.error)
        if self._prefix is None:
            return
        reason = PermanentError(
            f"job {job.job} rejected: {job.error or 'no reason given'}", api="unicat"
        )
        payload = object_outcome_payload(
            "unicat",
            "jobs",
            job.token,
            source_changed_at=job.updated_at,
            observed_at=iso_utc(observed_at),
            action="failed",
            target_type=None,
            target_uuid=None,
            attempts=1,
            error=reason.info(),
        )
        await outbox.add(
            conn, object_outcome_topic(self._prefix, "unicat", "jobs", job.token), payload
        )
        self._outbox_written()
