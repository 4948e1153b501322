"""The hourly quotas of the APIs and whether backfill work waits: what `crisync status` reads
(the daemon's memory is not its to read), and what a restart counts as already sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from crisync.state import inbox
from crisync.state.store import fetch_all, fetch_one


@dataclass(frozen=True)
class RecordedQuota:
    api: str
    hourly_limit: int
    used: int  # requests in the hour before recorded_at
    refills_at: str | None  # ISO UTC, while the quota is spent
    recorded_at: str  # ISO UTC


async def put(conn: aiosqlite.Connection, quota: RecordedQuota) -> None:
    await conn.execute(
        """INSERT OR REPLACE INTO api_quotas (api, hourly_limit, used, refills_at, recorded_at)
           VALUES (?, ?, ?, ?, ?)""",
        (quota.api, quota.hourly_limit, quota.used, quota.refills_at, quota.recorded_at),
    )


async def remove(conn: aiosqlite.Connection, api: str) -> None:
    await conn.execute("DELETE FROM api_quotas WHERE api = ?", (api,))


async def all_quotas(conn: aiosqlite.Connection) -> list[RecordedQuota]:
    rows = await fetch_all(
        conn,
        "SELECT api, hourly_limit, used, refills_at, recorded_at FROM api_quotas ORDER BY api",
    )
    return [RecordedQuota(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def hold_backfill(conn: aiosqlite.Connection, reason: str | None, recorded_at: str) -> None:
    """Backfill work waits, and why; None: it may run."""
    if reason is None:
        await conn.execute("DELETE FROM backfill_hold")
    else:
        await conn.execute(
            "INSERT OR REPLACE INTO backfill_hold (id, reason, recorded_at) VALUES (1, ?, ?)",
            (reason, recorded_at),
        )


async def describe(conn: aiosqlite.Connection) -> list[str]:
    """Lines for `crisync status`: each quota, and the backfill work that waits."""
    lines = [_quota_line(quota) for quota in await all_quotas(conn)]
    waiting = await inbox.pending_count(conn, backfill=True)
    held = await fetch_one(conn, "SELECT reason FROM backfill_hold")
    if held is not None and waiting:
        lines.append(f"backfill: {waiting} events wait, {held[0]}")
    elif waiting:
        lines.append(f"backfill: {waiting} events pending")
    return lines


def _quota_line(quota: RecordedQuota) -> str:
    recorded = datetime.fromisoformat(quota.recorded_at).strftime("%H:%M:%S")
    left = max(quota.hourly_limit - quota.used, 0)
    if quota.refills_at is not None:
        refills = datetime.fromisoformat(quota.refills_at).strftime("%H:%M:%S")
        return (
            f"{quota.api} hourly quota spent ({quota.used} of {quota.hourly_limit} requests "
            f"at {recorded} UTC): its work waits until {refills} UTC"
        )
    return (
        f"{quota.api} hourly quota: {left} of {quota.hourly_limit} requests left "
        f"(at {recorded} UTC)"
    )
