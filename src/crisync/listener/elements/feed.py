"""The Elements listener: sweeps each category's affected-since and deleted feeds into the inbox."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar
from urllib.parse import urlencode

import structlog

from crisync.errors import NotFoundError
from crisync.listener.base import REQUEST_ATTEMPTS, FeedLoop, SourceContext
from crisync.listener.elements.atom import ElementsObject, FeedPage
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.config import CATEGORY_OF_FEED, ElementsCategory, ElementsConfig
from crisync.listener.elements.paging import PageKey, PaginationLoopError, same_page
from crisync.listener.elements.relationships import RelationshipReader
from crisync.state import cursors, http_validators, inbox
from crisync.state.cursors import Cursor
from crisync.state.http_validators import Validators
from crisync.state.inbox import ChangeEvent
from crisync.state.store import utc_now

log = structlog.get_logger("crisync.listener.elements")
T = TypeVar("T")

# Below this schema version there is no "affected" timestamp to filter on.
AFFECTED_SINCE_VERSION = (5, 5)


def _schema(text: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in (text or "").split("."))
    except ValueError:
        return None


@dataclass(frozen=True)
class Feed:
    """One feed the listener sweeps: a category's changes, or its deletions."""

    category_feed: ElementsCategory  # the plural the API names it by, e.g. publications
    deletions: bool = False

    @property
    def name(self) -> str:
        """Its cursor's name, e.g. elements:publications or elements:deleted:publications."""
        middle = "deleted:" if self.deletions else ""
        return f"elements:{middle}{self.category_feed}"

    @property
    def category(self) -> str:
        return CATEGORY_OF_FEED[self.category_feed]


@dataclass(frozen=True)
class SweepResult:
    feed: str
    pages: int
    events_added: int
    complete: bool


class ElementsListener(FeedLoop):
    """Sweeps feeds; every page's events, validators and the cursor are committed together."""

    def __init__(
        self, config: ElementsConfig, client: ElementsClient, context: SourceContext
    ) -> None:
        super().__init__(context, api="elements", park_duration=config.park_duration)
        self._config = config
        self._client = client
        self._relationships = RelationshipReader(client, config.url, suggestions=config.suggestions)
        self._schema_version: tuple[int, ...] | None = None
        self._schema_known = False

    @property
    def loop_name(self) -> str:
        return "listener-elements"

    @property
    def beat_deadline(self) -> float:
        """Longest silence of a healthy listener: a wait, then a request with all its retries."""
        return self._config.poll_interval + REQUEST_ATTEMPTS * (self._config.timeout + 60)

    @property
    def feeds(self) -> list[Feed]:
        """Each category's changes, then its deletions (which start where its changes did)."""
        feeds = []
        for category_feed in self._config.categories:
            feeds.append(Feed(category_feed))
            if self._config.deletions:
                feeds.append(Feed(category_feed, deletions=True))
        return feeds

    async def run(self) -> None:
        """Sweep every poll interval until told to stop."""
        while not self._life.stopping.is_set():
            started = time.monotonic()
            await self.sweep_all()
            self._telemetry.beat(self.loop_name)
            await self._life.wait_next_round(started, self._config.poll_interval)

    async def sweep_all(self) -> None:
        """One sweep of every feed; a failing feed does not stop the others."""
        for feed in self.feeds:
            try:
                await self.sweep(feed)
            except Exception as exc:  # noqa: BLE001 - a failing feed must not stop the others
                await self.failed(feed.name, exc, restart=_sweep_over)
            if self._life.stopping.is_set():
                return

    async def sweep(self, feed: Feed) -> SweepResult:
        """Read the feed from its cursor to its end, one committed page at a time."""
        parked_until = await self.parked_until(feed.name)
        if parked_until is not None:
            log.debug("elements.feed_parked_skipped", feed=feed.name, until=parked_until)
            return SweepResult(feed.name, 0, 0, complete=False)
        async with self._store.reading() as conn:
            cursor = await cursors.get(conn, feed.name)
        if cursor.next_url:
            url, sweep_started = cursor.next_url, cursor.sweep_started
            log.info("elements.sweep_resumed", feed=feed.name, url=url)
        else:
            first = await self._first_url(feed, cursor)
            if first is None:
                return SweepResult(feed.name, 0, 0, complete=False)
            url, sweep_started = first, None
        followed: set[PageKey] = set()
        pages = added = 0
        while True:
            followed.add(same_page(url))
            page, server_time = await self._request(feed, partial(self._client.get_feed, url))
            sweep_started = sweep_started or server_time
            self._learn_schema(page.schema_version)
            next_url = (
                self._client.on_base(page.next_url, relative_to=url) if page.next_url else None
            )
            if next_url is not None and same_page(next_url) in followed:
                raise PaginationLoopError(next_url)
            events, validators = await self._events(feed, page)
            done = next_url is None
            saved = replace(
                cursor,
                high_water=sweep_started if done else cursor.high_water,
                sweep_started=None if done else sweep_started,
                next_url=next_url,
                last_error=None,
                last_poll=datetime.now(UTC),
                parked_until=None,
            )
            # The first sweep of a category's changes reads all of it: backfill work.
            first_pass = cursor.high_water is None and not feed.deletions
            page_added = await self._commit_page(events, validators, saved, backfill=first_pass)
            if cursor.parked_until is not None:
                log.info("elements.feed_unparked", feed=feed.name)
            cursor = saved
            pages += 1
            added += page_added
            self._telemetry.received(feed.name, page_added)
            self._telemetry.beat(self.loop_name)
            if events:
                self._life.work_ready.set()
            if next_url is None:
                self.read_to_the_end(
                    "elements.sweep_done",
                    feed.name,
                    pages=pages,
                    added=added,
                    high_water=sweep_started.isoformat(),
                )
                return SweepResult(feed.name, pages, added, complete=True)
            if self._life.stopping.is_set():
                # The stored next link resumes this sweep at the next start.
                return SweepResult(feed.name, pages, added, complete=False)
            url = next_url

    async def _commit_page(
        self,
        events: list[ChangeEvent],
        validators: dict[str, Validators | None],
        cursor: Cursor,
        *,
        backfill: bool,
    ) -> int:
        """The page's events, the validators of what they carry and the cursor: one transaction."""
        async with self._store.transaction() as conn:
            added = await inbox.add_events(conn, events, utc_now(), backfill=backfill)
            for object_url, kept in validators.items():
                if kept is None:
                    await http_validators.forget(conn, object_url)
                else:
                    await http_validators.put(conn, object_url, kept)
            await cursors.save(conn, cursor)
        return added

    async def _first_url(self, feed: Feed, cursor: Cursor) -> str | None:
        """The first page of a new sweep; None when a deletions feed has nowhere to start."""
        lookback = timedelta(seconds=self._config.lookback)
        if feed.deletions:
            start = cursor.high_water or await self._deletions_start(feed)
            if start is None:
                return None
            query = {
                "deleted-since": (start - lookback).isoformat(timespec="milliseconds"),
                "per-page": str(self._config.per_page),
            }
            return f"{self._config.url}/deleted/{feed.category_feed}?{urlencode(query)}"
        query = {"detail": self._config.detail, "per-page": str(self._config.per_page)}
        if cursor.high_water is not None:
            since = (cursor.high_water - lookback).isoformat(timespec="milliseconds")
            query[await self._since_parameter(feed)] = since
        # urlencode percent-encodes '+' in the offset, which a raw query would turn into a space.
        return f"{self._config.url}/{feed.category_feed}?{urlencode(query)}"

    async def _deletions_start(self, feed: Feed) -> datetime | None:
        """Deletions count from the first sweep of the category's changes on.

        What was deleted before crisync first looked was never replicated, so it is not news;
        what is deleted during that first sweep is, so the start is the sweep's own start.
        """
        async with self._store.reading() as conn:
            changes = await cursors.get(conn, Feed(feed.category_feed).name)
        return changes.high_water or changes.sweep_started

    async def _since_parameter(self, feed: Feed) -> str:
        if not self._schema_known:
            probe = f"{self._config.url}/{feed.category_feed}?{urlencode({'per-page': '1'})}"
            page, _ = await self._request(feed, partial(self._client.get_feed, probe))
            self._learn_schema(page.schema_version)
        if self._schema_version is None or self._schema_version >= AFFECTED_SINCE_VERSION:
            return "affected-since"
        return "modified-since"

    def _learn_schema(self, text: str | None) -> None:
        version = _schema(text)
        if self._schema_known and version == self._schema_version:
            return
        self._schema_known, self._schema_version = True, version
        log.info("elements.schema_version", schema_version=text)
        if version is not None and version < AFFECTED_SINCE_VERSION:
            log.warning(
                "elements.schema_fallback",
                schema_version=text,
                detail="no last-affected-when below 5.5: sweeping by modified-since, so a "
                "change to a related object alone is not seen",
            )

    async def _events(
        self, feed: Feed, page: FeedPage
    ) -> tuple[list[ChangeEvent], dict[str, Validators | None]]:
        """The page's change events and the validators to keep (None: forget) with them."""
        if feed.deletions:
            return [
                ChangeEvent(
                    feed.name,
                    "elements",
                    gone.category,
                    gone.id,
                    "delete",
                    gone.deleted_at,
                    {
                        "id": gone.id,
                        "category": gone.category,
                        "deleted_at": gone.deleted_at.astimezone(UTC).isoformat(),
                    },
                )
                for gone in page.deleted
                if gone.category == feed.category
            ], {}
        listed = [obj for obj in page.objects if obj.category == feed.category]
        validators: dict[str, Validators | None] = {}
        if self._config.detail == "full":
            events = [self._upsert(feed, obj, obj) for obj in listed]
        else:
            events, validators = await self._fetch_listed(feed, listed)
        if feed.category_feed in self._config.relationship_categories:
            events = [e for e in events if await self._with_relationships(feed, e)]
        return events, validators

    async def _with_relationships(self, feed: Feed, event: ChangeEvent) -> bool:
        """Put the object's relationships in its payload; False when it is gone since."""
        try:
            event.payload["relationships"] = await self._relationships.read(
                feed.category_feed, event.key, partial(self._request, feed)
            )
        except NotFoundError:
            return False  # deleted since it was listed: the deletions feed tells
        finally:
            self._telemetry.beat(self.loop_name)
        return True

    async def _fetch_listed(
        self, feed: Feed, listed: list[ElementsObject]
    ) -> tuple[list[ChangeEvent], dict[str, Validators | None]]:
        """With detail = ref, each listed object is fetched, conditionally: 304 is no news.

        Not so for an object whose relationships are read: it is affected when only its
        relationships changed, and then its own answer is a 304 with news all the same.
        """
        urls = {obj.id: self._client.object_url(feed.category_feed, obj.id) for obj in listed}
        conditional = feed.category_feed not in self._config.relationship_categories
        async with self._store.reading() as conn:
            known = {
                obj_id: await http_validators.get(conn, url) if conditional else None
                for obj_id, url in urls.items()
            }
        events: list[ChangeEvent] = []
        validators: dict[str, Validators | None] = {}
        for listed_obj in listed:
            try:
                fetched = await self._request(
                    feed,
                    partial(
                        self._client.get_object,
                        feed.category_feed,
                        listed_obj.id,
                        known[listed_obj.id],
                    ),
                )
            except NotFoundError:
                # Gone since it was listed: the deletions feed tells.
                validators[urls[listed_obj.id]] = None
                continue
            self._telemetry.beat(self.loop_name)
            if fetched.obj is not None:
                events.append(self._upsert(feed, listed_obj, fetched.obj))
                validators[fetched.url] = fetched.validators if fetched.validators else None
        return events, validators

    @staticmethod
    def _upsert(feed: Feed, listed: ElementsObject, content: ElementsObject) -> ChangeEvent:
        return ChangeEvent(
            feed.name,
            "elements",
            listed.category,
            listed.id,
            "upsert",
            listed.changed_at,
            content.payload,
        )

    async def _request(self, feed: Feed, request: Callable[[], Awaitable[T]]) -> T:
        return await self.request(feed.name, request, "page")


def _sweep_over(cursor: Cursor) -> Cursor:
    """After a page that fails for good, the next sweep starts over from the high-water mark."""
    return replace(cursor, sweep_started=None, next_url=None)
