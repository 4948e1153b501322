"""An object's relationships, read page by page into its payload.

Elements makes a publication "affected" when a relationship involving it is created,
changed or deleted; the object itself may be unchanged. So the listener reads the
relationships of every affected object of the configured categories and puts them in the
payload under `relationships`, one entry per relationship (`Relationship.as_json`):
`{"relationship", "type", "type_id", "category", "id", "visible", "claimed"}`, where
`category` and `id` name the related object, `visible` is false when its user hid it, and
`claimed` is false for a pending suggestion (read only with `[elements] suggestions`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

from crisync.listener.elements.atom import RelationshipPage
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.config import CATEGORY_OF_FEED, MAX_PER_PAGE, ElementsCategory
from crisync.listener.elements.paging import PageKey, PaginationLoopError, same_page

# A relationship at full detail (is-visible is only there) counts as a full-detail item.
RELATIONSHIPS_PER_PAGE = MAX_PER_PAGE["full"]

# How a request is sent: directly, or with a feed loop's retries.
Send = Callable[[Callable[[], Awaitable[RelationshipPage]]], Awaitable[RelationshipPage]]


async def send_once(request: Callable[[], Awaitable[RelationshipPage]]) -> RelationshipPage:
    return await request()


class RelationshipReader:
    """Reads the relationships (and, when configured, the pending suggestions) of objects."""

    def __init__(self, client: ElementsClient, api_url: str, *, suggestions: bool) -> None:
        self._client = client
        self._api_url = api_url
        self._suggestions = suggestions

    def first_pages(self, category_feed: ElementsCategory, object_id: str) -> list[str]:
        category = CATEGORY_OF_FEED[category_feed]
        query = {"detail": "full", "per-page": str(RELATIONSHIPS_PER_PAGE)}
        involving = {"involving": f"{category}({object_id})"}
        urls = [f"{self._api_url}/relationships?{urlencode({**involving, **query})}"]
        if self._suggestions:
            pending = f"{self._client.object_url(category_feed, object_id)}/suggestions"
            urls.append(f"{pending}/relationships/pending?{urlencode(query)}")
        return urls

    async def read(
        self, category_feed: ElementsCategory, object_id: str, send: Send = send_once
    ) -> list[dict[str, Any]]:
        """Every relationship of the object, each page through `send`."""
        involved = (CATEGORY_OF_FEED[category_feed], object_id)
        found: list[dict[str, Any]] = []
        for first in self.first_pages(category_feed, object_id):
            url: str | None = first
            followed: set[PageKey] = set()
            while url is not None:
                followed.add(same_page(url))
                page = await send(partial(self._client.get_relationships, url, involved))
                found += [relationship.as_json() for relationship in page.relationships]
                url = (
                    self._client.on_base(page.next_url, relative_to=url) if page.next_url else None
                )
                if url is not None and same_page(url) in followed:
                    raise PaginationLoopError(url)
        return found
