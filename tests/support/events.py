"""Change events as the Elements listener writes them, put into a real inbox and taken out
as the dispatcher would."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from crisync.sim.journals import JOURNALS
from crisync.state import inbox
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.store import Store, utc_now

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NATURE = next(journal for journal in JOURNALS if journal[0] == "Nature")  # (title, ISSN)


def publication(
    key: str,
    title: str,
    minute: int = 0,
    *,
    authors: Iterable[tuple[str, str]] = (),
    related: Iterable[str] = (),
    publication_type: str = "journal-article",
    scopus_eid: str | None = None,
    **fields: Any,
) -> ChangeEvent:
    """An Elements publication as the listener reads it; authors are (last name, initials);
    `related` are the users a visible, claimed authorship relates to it; `scopus_eid` gives
    it a record from Scopus. A journal article is in a journal of Pure's journal list."""
    journal = dict(zip(("journal", "issn"), NATURE, strict=True))
    fields = {
        "title": title,
        "language": "en",
        "publication-date": {"year": 2025, "month": 6},
        **(journal if publication_type == "journal-article" else {}),
        **fields,
    }
    people = [{"last-name": last, "initials": initials} for last, initials in authors]
    if people:
        fields["authors"] = people
    payload: dict[str, Any] = {
        "id": key,
        "category": "publication",
        "attributes": {"type": publication_type},
        "fields": fields,
        "relationships": [authorship(user_key) for user_key in related],
    }
    if scopus_eid is not None:
        payload["record_ids"] = {"scopus": scopus_eid}
    return ChangeEvent(
        "elements:publications",
        "elements",
        "publication",
        key,
        "upsert",
        T0 + timedelta(minutes=minute),
        payload,
    )


def authorship(
    user_key: str, *, visible: bool = True, claimed: bool = True, relationship: str = ""
) -> dict[str, Any]:
    """One entry of a publication's relationships: an authorship of the user `user_key`."""
    return {
        "relationship": relationship or f"r{user_key}",
        "type": "publication-user-authorship",
        "type_id": "8",
        "category": "user",
        "id": user_key,
        "visible": visible,
        "claimed": claimed,
    }


def user(
    key: str,
    last_name: str,
    minute: int = 0,
    *,
    first_name: str = "Ada",
    proprietary_id: str | None = None,
) -> ChangeEvent:
    """An Elements user; `proprietary_id` is the HR employee id Elements keeps."""
    attributes = {} if proprietary_id is None else {"proprietary-id": proprietary_id}
    return ChangeEvent(
        "elements:users",
        "elements",
        "user",
        key,
        "upsert",
        T0 + timedelta(minutes=minute),
        {
            "id": key,
            "category": "user",
            "attributes": attributes,
            "fields": {"first-name": first_name, "last-name": last_name},
        },
    )


def deletion(kind: str, key: str, minute: int = 0) -> ChangeEvent:
    """A deletion as the Elements deleted-objects feed reports it."""
    when = T0 + timedelta(minutes=minute)
    return ChangeEvent(
        f"elements:deleted:{kind}",
        "elements",
        kind,
        key,
        "delete",
        when,
        {"id": key, "category": kind, "deleted_at": when.isoformat()},
    )


async def enqueue(store: Store, *events: ChangeEvent, backfill: bool = False) -> None:
    async with store.transaction() as conn:
        await inbox.add_events(conn, events, utc_now(), backfill=backfill)


async def claim_one(store: Store, *, skip: Iterable[str] = ()) -> InboxEvent:
    """The next event, passing over the keys in `skip` (source/kind/key) as if in flight."""
    async with store.reading() as conn:
        (event,) = await inbox.claim_ready(conn, busy_keys=skip, now=utc_now(), limit=1)
    return event
