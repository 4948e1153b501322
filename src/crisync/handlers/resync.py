"""Resync: fetch one source object again and queue it for replication, whatever its state.

The object goes into the inbox as an upsert event, like any feed page's (a running daemon
takes it within seconds; otherwise the next `crisync once` or `crisync run` does). Its
mapping row, if any, forgets the payload hash and the lock, so the handler writes and
locks the Pure content again even when the source did not change: a resync repairs what
was edited, unlocked or deleted in Pure since.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote, urlencode

from crisync.config.model import CATEGORY_OF_FEED
from crisync.errors import PermanentError
from crisync.listener.elements import ElementsClient
from crisync.state import inbox, mapping
from crisync.state.inbox import ChangeEvent
from crisync.state.store import Store, utc_now

# Elements category → its resource (the plural the listener reads it from).
FEED_OF_CATEGORY = {category: feed for feed, category in CATEGORY_OF_FEED.items()}


@dataclass(frozen=True)
class ElementsSource:
    client: ElementsClient
    url: str  # the API endpoint, up to and including the version


async def resync_object(
    store: Store, source: str, kind: str, key: str, *, elements: ElementsSource | None
) -> ChangeEvent:
    """Fetch the object, queue it, and return the queued event.

    Raises PermanentError when the source or kind cannot be resynced or the object does
    not exist (status 404), and the source API's classified errors otherwise. The caller
    wakes the dispatcher (the daemon's work_ready), if one runs in its process.
    """
    if source != "elements":
        raise PermanentError(f"resync of {source} objects is not supported yet", api="crisync")
    if elements is None:
        raise PermanentError("[elements] is not configured", api="crisync")
    feed = FEED_OF_CATEGORY.get(kind)
    if feed is None:
        kinds = ", ".join(sorted(FEED_OF_CATEGORY))
        raise PermanentError(f"elements has no kind {kind!r} to resync ({kinds})", api="crisync")
    query = urlencode({"detail": "full"})
    page, _ = await elements.client.get_feed(f"{elements.url}/{feed}/{quote(key, safe='')}?{query}")
    found = next((o for o in page.objects if o.category == kind and o.id == key), None)
    if found is None:
        raise PermanentError(f"Elements answered without {kind} {key}", api="elements", status=404)
    # A feed name of its own per request: the inbox drops repeats of (feed, key, changed_at),
    # and a resync of an unchanged object must not be dropped as one.
    event = ChangeEvent(
        f"resync:{utc_now()}", source, kind, key, "upsert", found.changed_at, found.payload
    )
    async with store.transaction() as conn:
        await inbox.add_events(conn, [event], utc_now())
        known = await mapping.get(conn, source, kind, key)
        if known is not None:
            await mapping.put(conn, replace(known, payload_hash="", locked=False))
    return event
