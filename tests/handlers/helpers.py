"""Put events in a real inbox and take them out as the dispatcher would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from crisync.state import inbox
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.store import Store, utc_now

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def publication(key: str, title: str, minute: int = 0) -> ChangeEvent:
    fields = {"title": title, "language": "en", "publication-date": {"year": 2025, "month": 6}}
    payload: dict[str, Any] = {"id": key, "category": "publication", "fields": fields}
    return ChangeEvent(
        "elements:publications",
        "elements",
        "publication",
        key,
        "upsert",
        T0 + timedelta(minutes=minute),
        payload,
    )


def user(key: str, last_name: str, minute: int = 0) -> ChangeEvent:
    return ChangeEvent(
        "elements:users",
        "elements",
        "user",
        key,
        "upsert",
        T0 + timedelta(minutes=minute),
        {"id": key, "category": "user", "fields": {"first-name": "Ada", "last-name": last_name}},
    )


async def enqueue(store: Store, *events: ChangeEvent) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, events, utc_now())


async def claim_one(store: Store) -> InboxEvent:
    async with store.reading() as conn:
        (event,) = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=1)
    return event
