"""The Elements source: its feeds, the resync of one object, and the write-back it declares."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import aiohttp

from crisync.errors import NotFoundError, PermanentError
from crisync.handlers.base import Handler
from crisync.listener.base import Loop, Source, SourceContext
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.config import CATEGORY_OF_FEED, FEED_OF_CATEGORY, ElementsConfig
from crisync.listener.elements.feed import ElementsListener
from crisync.listener.elements.relationships import RelationshipReader
from crisync.listener.elements.writeback import WRITEBACK_SOURCE, ElementsWriteback
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.store import utc_now
from crisync.telemetry import Telemetry


async def check_elements(
    config: ElementsConfig, session: aiohttp.ClientSession, telemetry: Telemetry
) -> str:
    """One authenticated request per category read: its first page of one object."""
    client = ElementsClient(session, config, telemetry=telemetry)
    for feed in config.categories:
        await client.get_feed(f"{config.url}/{feed}?{urlencode({'per-page': '1'})}")
    return f"{config.username} may read {', '.join(config.categories)} at {config.url}"


class ElementsSource(Source):
    name = "elements"

    def __init__(self, config: ElementsConfig, context: SourceContext) -> None:
        self.config = config
        self._context = context
        # One client for every request to Elements, so the gap between requests holds for all.
        self.client = ElementsClient(context.session, config, telemetry=context.telemetry)
        self._relationships = RelationshipReader(
            self.client, config.url, suggestions=config.suggestions
        )
        # A plan writes nothing back: the write-back is left out of it.
        writing = config.writeback and not context.planning
        self.writeback = ElementsWriteback(config, self.client, context.store) if writing else None

    def kinds(self) -> frozenset[str]:
        return self.config.kinds()

    def loops(self, *, once: bool) -> list[Loop]:
        listener = ElementsListener(self.config, self.client, self._context)
        run = listener.sweep_all if once else listener.run
        return [Loop(listener.loop_name, listener.beat_deadline, run)]

    async def start(self) -> None:
        if self.writeback is not None:
            await self.writeback.verify()

    def routes(self) -> dict[tuple[str, str], Handler]:
        if self.writeback is None:
            return {}
        return {
            (WRITEBACK_SOURCE, kind): self.writeback.handle for kind in CATEGORY_OF_FEED.values()
        }

    def after_create(
        self, event: InboxEvent, target_type: str, target_uuid: str
    ) -> tuple[ChangeEvent, ...]:
        if self.writeback is None:
            return ()
        return self.writeback.follow_ups(event, target_type, target_uuid)

    async def resync(self, kind: str, key: str) -> ChangeEvent:
        feed = FEED_OF_CATEGORY.get(kind)
        if feed is None:
            kinds = ", ".join(sorted(FEED_OF_CATEGORY))
            raise PermanentError(
                f"elements has no kind {kind!r} to resync ({kinds})", api="crisync"
            )
        query = urlencode({"detail": "full"})
        url = f"{self.config.url}/{feed}/{quote(key, safe='')}?{query}"
        page, _ = await self.client.get_feed(url)
        found = next((o for o in page.objects if o.category == kind and o.id == key), None)
        if found is None:
            raise NotFoundError(
                f"Elements answered without {kind} {key}", api="elements", status=404
            )
        if feed in self.config.relationship_categories:
            found.payload["relationships"] = await self._relationships.read(feed, key)
        # A feed name of its own per request: the inbox drops repeats of (feed, key,
        # changed_at), and a resync of an unchanged object must not be dropped as one.
        return ChangeEvent(
            f"resync:{utc_now()}", self.name, kind, key, "upsert", found.changed_at, found.payload
        )
