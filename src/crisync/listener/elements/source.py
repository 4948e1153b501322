"""The Elements source: its feeds, the resync of one object, and the write-back it declares."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import aiohttp

from crisync.errors import (
    CredentialError,
    CrisyncError,
    MissingContentError,
    MissingRightsError,
    NotFoundError,
    PermanentError,
)
from crisync.handlers.base import Handler, SourceRefusedError
from crisync.listener.base import Loop, Source, SourceContext
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.config import CATEGORY_OF_FEED, FEED_OF_CATEGORY, ElementsConfig
from crisync.listener.elements.feed import ElementsListener
from crisync.listener.elements.relationships import RelationshipReader
from crisync.listener.elements.writeback import (
    WRITEBACK_SOURCE,
    ElementsWriteback,
    check_writeback,
    misconfiguration,
)
from crisync.state import mapping
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.store import utc_now
from crisync.telemetry import Telemetry


async def check_elements(
    config: ElementsConfig, session: aiohttp.ClientSession, telemetry: Telemetry
) -> str:
    """One authenticated request per category read (its first page of one object), and
    the check of each configured write-back; MissingRightsError names the categories the
    account may not read, MissingContentError each write-back Elements cannot take."""
    client = ElementsClient(session, config, telemetry=telemetry)
    gaps = await read_gaps(client, config)
    if gaps:
        raise MissingRightsError(gaps, api="elements")
    problems = []
    for feed, settings in config.writeback.items():
        category = CATEGORY_OF_FEED[feed]
        checked = await check_writeback(client, category, settings)
        if isinstance(checked, str):
            problems.append(misconfiguration(category, settings, checked))
    if problems:
        raise MissingContentError("; ".join(problems), api="elements")
    written = f", and may write back into {', '.join(config.writeback)}" if config.writeback else ""
    return f"{config.username} may read {', '.join(config.categories)} at {config.url}{written}"


async def read_gaps(client: ElementsClient, config: ElementsConfig) -> str | None:
    """The configured categories the account may not read (Elements answers 403), in one
    line, or None. Any other failure is raised: it is not the account's rights."""
    refused = []
    for feed in config.categories:
        try:
            await client.get_feed(f"{config.url}/{feed}?{urlencode({'per-page': '1'})}")
        except CredentialError as exc:
            if exc.status != 403:
                raise
            refused.append(feed)
    return f"the Elements account may not read {', '.join(refused)}" if refused else None


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
        """On first contact, the account's right to read every category; the write-back.
        Either refused stops the run (SourceRefusedError) before anything is written."""
        if not self._context.planning and await self._first_contact():
            try:
                gaps = await read_gaps(self.client, self.config)
            except CrisyncError:
                gaps = None  # not the account's rights: the feeds meet it next and say so
            if gaps is not None:
                raise SourceRefusedError(gaps)
        if self.writeback is not None:
            await self.writeback.verify()

    async def _first_contact(self) -> bool:
        """Whether nothing is mapped yet: later, a right taken away parks the feed (403)."""
        async with self._context.store.reading() as conn:
            return await mapping.count(conn) == 0

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
