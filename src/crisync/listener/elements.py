"""The Elements listener: sweeps each category's affected-since and deleted feeds into the inbox."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from typing import TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
import structlog
from multidict import CIMultiDictProxy

from crisync.backoff import full_jitter
from crisync.config.model import CATEGORY_OF_FEED, ElementsCategory, ElementsConfig
from crisync.errors import (
    CredentialError,
    CrisyncError,
    NotFoundError,
    PermanentError,
    classify_elements_error,
    classify_exception,
    parse_retry_after,
)
from crisync.listener.atom import ElementsObject, FeedPage, parse_error, parse_feed
from crisync.state import cursors, http_validators, inbox
from crisync.state.cursors import Cursor
from crisync.state.http_validators import Validators
from crisync.state.inbox import ChangeEvent
from crisync.state.store import Store, utc_now
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.listener.elements")

# Tries of one request before the sweep is given up until the next poll.
PAGE_ATTEMPTS = 5
# Redirects followed for one request (PATCH answers 303; proxies may add their own).
MAX_REDIRECTS = 5
# Below this schema version there is no "affected" timestamp to filter on.
AFFECTED_SINCE_VERSION = (5, 5)

T = TypeVar("T")
PageKey = tuple[str, str, str, tuple[tuple[str, str], ...]]


class ResponseTooLargeError(PermanentError):
    """A response above [elements] max_response_bytes: refused before it fills memory."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response larger than {limit} bytes; refused", api="elements")


class PaginationLoopError(PermanentError):
    """A next link leads back to a page this sweep already read (a corrupt search index)."""

    def __init__(self, url: str) -> None:
        super().__init__(f"next link loops back to {url}; sweep abandoned", api="elements")


@dataclass(frozen=True)
class Answer:
    status: int  # 2xx, or 304 to a conditional request
    body: bytes
    date: str | None  # the HTTP Date: the server's clock when it answered
    validators: Validators


@dataclass(frozen=True)
class ObjectFetch:
    """A conditional GET of one object: `obj` is None when it is unchanged (304)."""

    url: str
    obj: ElementsObject | None
    validators: Validators


class ElementsClient:
    """Requests to the Elements API: Basic auth, polite gaps, a size cap, errors classified.

    Links and redirects that name another host than the configured URL are moved to it:
    the credentials go to no other host.
    """

    def __init__(
        self, session: aiohttp.ClientSession, config: ElementsConfig, *, telemetry: Telemetry
    ) -> None:
        self._session = session
        self._config = config
        self._telemetry = telemetry
        self._base = urlsplit(config.url)
        self._headers = {
            "Authorization": aiohttp.encode_basic_auth(
                config.username, config.password.get_secret_value()
            )
        }
        self._gap_lock = asyncio.Lock()
        self._last_request = 0.0
        self._foreign_hosts: set[str] = set()

    def object_url(self, category_feed: str, object_id: str) -> str:
        return f"{self._config.url}/{category_feed}/{quote(object_id, safe='')}"

    def on_base(self, link: str, *, relative_to: str | None = None) -> str:
        """`link` made absolute, on the configured scheme and host; a rewrite is logged once."""
        parts = urlsplit(urljoin(relative_to or self._config.url + "/", link))
        if (parts.scheme, parts.netloc) == (self._base.scheme, self._base.netloc):
            return urlunsplit(parts)
        if parts.netloc not in self._foreign_hosts:
            self._foreign_hosts.add(parts.netloc)
            log.warning(
                "elements.link_rewritten",
                link_host=parts.netloc,
                base_host=self._base.netloc,
                link=urlunsplit(parts),
            )
        return urlunsplit(parts._replace(scheme=self._base.scheme, netloc=self._base.netloc))

    async def get_feed(self, url: str) -> tuple[FeedPage, datetime]:
        """One feed page and the server's clock (HTTP Date) when it answered."""
        answer = await self._send("GET", url)
        return self._page(answer, url), _server_date(answer.date)

    async def get_object(
        self, category_feed: str, object_id: str, validators: Validators | None = None
    ) -> ObjectFetch:
        """GET /{cat}/{id}, conditional on the validators of the last answer crisync kept."""
        url = self.object_url(category_feed, object_id)
        headers = {}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        answer = await self._send("GET", url, headers=headers)
        if answer.status == 304:
            return ObjectFetch(url, None, answer.validators or validators or Validators(None, None))
        objects = self._page(answer, url).objects
        if len(objects) != 1:
            raise PermanentError(f"{url} answered {len(objects)} objects, not one", api="elements")
        return ObjectFetch(url, objects[0], answer.validators)

    async def get_document(self, path: str) -> bytes:
        """The body of a GET below the API URL, e.g. /publication/types."""
        return (await self._send("GET", self._config.url + path)).body

    async def patch_record(
        self, category: str, source: str, proprietary_id: str, document: bytes
    ) -> FeedPage:
        """PATCH /{cat}/records/{source}/{proprietary-id} with an update-record document."""
        url = (
            f"{self._config.url}/{category}/records/"
            f"{quote(source, safe='')}/{quote(proprietary_id, safe='')}"
        )
        answer = await self._send(
            "PATCH", url, data=document, headers={"Content-Type": "text/xml; charset=utf-8"}
        )
        return self._page(answer, url)

    def _page(self, answer: Answer, url: str) -> FeedPage:
        page = parse_feed(answer.body)
        for warning in page.warnings:
            log.warning(
                "elements.api_warning", field=warning.field, warning=warning.message, url=url
            )
        return page

    async def _send(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request, redirects followed (303 as a GET); an error answer raises, classified."""
        target = self.on_base(url)
        for _ in range(MAX_REDIRECTS + 1):
            status, body, response_headers = await self._exchange(method, target, data, headers)
            location = response_headers.get("Location")
            if status not in (301, 302, 303, 307, 308) or not location:
                break
            target = self.on_base(location, relative_to=target)
            if status == 303:
                method, data, headers = "GET", None, None
        else:
            raise PermanentError(f"more than {MAX_REDIRECTS} redirects from {url}", api="elements")
        if status >= 300 and status != 304:
            error = parse_error(body)
            raise classify_elements_error(
                status,
                error.code if error else None,
                error.message if error else f"HTTP {status} from {method} {target}",
                parse_retry_after(response_headers.get("Retry-After")),
            )
        return Answer(
            status,
            body,
            response_headers.get("Date"),
            Validators(response_headers.get("ETag"), response_headers.get("Last-Modified")),
        )

    async def _exchange(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str] | None
    ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        await self._polite_pause()
        started, status = time.monotonic(), "failed"
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers={**self._headers, **(headers or {})},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            ) as response:
                status = str(response.status)
                body = await self._read_capped(response)
                return response.status, body, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
            raise classify_exception("elements", exc) from exc
        finally:
            self._telemetry.request("elements", method, status, time.monotonic() - started)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._config.max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            raise ResponseTooLargeError(limit)
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise ResponseTooLargeError(limit)
        return bytes(body)

    async def _polite_pause(self) -> None:
        async with self._gap_lock:
            wait = self._last_request + self._config.request_gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_request = time.monotonic()


def _server_date(header: str | None) -> datetime:
    if header:
        try:
            return parsedate_to_datetime(header).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    # Without a usable Date the local clock is the only clock; the lookback absorbs skew.
    log.warning("elements.no_server_date")
    return datetime.now(UTC)


def _same_page(url: str) -> PageKey:
    """What identifies a page, whatever the order or encoding of its query."""
    parts = urlsplit(url)
    query = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return parts.scheme, parts.netloc.lower(), parts.path, query


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


class ElementsListener:
    """Sweeps feeds; every page's events, validators and the cursor are committed together."""

    def __init__(
        self,
        config: ElementsConfig,
        client: ElementsClient,
        store: Store,
        work_ready: asyncio.Event,
        stopping: asyncio.Event,
        *,
        telemetry: Telemetry,
    ) -> None:
        self._config = config
        self._client = client
        self._store = store
        self._work_ready = work_ready
        self._stopping = stopping
        self._telemetry = telemetry
        self._schema_version: tuple[int, ...] | None = None
        self._schema_known = False

    @property
    def loop_name(self) -> str:
        return "listener-elements"

    @property
    def beat_deadline(self) -> float:
        """Longest silence of a healthy listener: a wait, then a request with all its retries."""
        return self._config.poll_interval + PAGE_ATTEMPTS * (self._config.timeout + 60)

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
        """Sweep, wait the poll interval, repeat until told to stop."""
        while not self._stopping.is_set():
            await self.sweep_all()
            self._telemetry.beat(self.loop_name)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self._config.poll_interval)
            except TimeoutError:
                continue

    async def sweep_all(self) -> None:
        """One sweep of every feed; a failing feed does not stop the others."""
        for feed in self.feeds:
            try:
                await self.sweep(feed)
            except CredentialError as exc:
                await self._park(feed, exc)
            except CrisyncError as exc:
                await self._sweep_failed(feed, exc.message, retriable=exc.retriable)
                log.log(
                    logging.WARNING if exc.retriable else logging.ERROR,
                    "elements.sweep_failed",
                    feed=feed.name,
                    error=exc.message,
                    status=exc.status,
                    error_class=type(exc).__name__,
                )
            except Exception as exc:  # a bug with one feed must not stop the daemon
                log.exception("elements.sweep_crashed", feed=feed.name)
                await self._sweep_failed(feed, f"internal error: {exc!r}", retriable=False)
            if self._stopping.is_set():
                return

    async def sweep(self, feed: Feed) -> SweepResult:
        """Read the feed from its cursor to its end, one committed page at a time."""
        async with self._store.reading() as conn:
            cursor = await cursors.get(conn, feed.name)
        now = datetime.now(UTC)
        if cursor.parked_until is not None and now < cursor.parked_until:
            log.debug("elements.feed_parked_skipped", feed=feed.name, until=cursor.parked_until)
            return SweepResult(feed.name, 0, 0, complete=False)
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
            followed.add(_same_page(url))
            page, server_time = await self._retrying(feed, partial(self._client.get_feed, url))
            sweep_started = sweep_started or server_time
            self._learn_schema(page.schema_version)
            next_url = (
                self._client.on_base(page.next_url, relative_to=url) if page.next_url else None
            )
            if next_url is not None and _same_page(next_url) in followed:
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
            page_added = await self._commit_page(events, validators, saved)
            if cursor.parked_until is not None:
                log.info("elements.feed_unparked", feed=feed.name)
            cursor = saved
            pages += 1
            added += page_added
            self._telemetry.received(feed.name, page_added)
            self._telemetry.beat(self.loop_name)
            if events:
                self._work_ready.set()
            if next_url is None:
                log.info(
                    "elements.sweep_done",
                    feed=feed.name,
                    pages=pages,
                    events_added=added,
                    high_water=sweep_started.isoformat(),
                )
                return SweepResult(feed.name, pages, added, complete=True)
            if self._stopping.is_set():
                # The stored next link resumes this sweep at the next start.
                return SweepResult(feed.name, pages, added, complete=False)
            url = next_url

    async def _commit_page(
        self, events: list[ChangeEvent], validators: dict[str, Validators | None], cursor: Cursor
    ) -> int:
        """The page's events, the validators of what they carry and the cursor: one transaction."""
        async with self._store.transaction() as conn:
            added = await inbox.add_events(conn, events, utc_now())
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
            page, _ = await self._retrying(feed, partial(self._client.get_feed, probe))
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
        if self._config.detail == "full":
            return [self._upsert(feed, obj, obj) for obj in listed], {}
        return await self._fetch_listed(feed, listed)

    async def _fetch_listed(
        self, feed: Feed, listed: list[ElementsObject]
    ) -> tuple[list[ChangeEvent], dict[str, Validators | None]]:
        """With detail = ref, each listed object is fetched, conditionally: 304 is no news."""
        urls = {obj.id: self._client.object_url(feed.category_feed, obj.id) for obj in listed}
        async with self._store.reading() as conn:
            known = {obj_id: await http_validators.get(conn, url) for obj_id, url in urls.items()}
        events: list[ChangeEvent] = []
        validators: dict[str, Validators | None] = {}
        for listed_obj in listed:
            try:
                fetched = await self._retrying(
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

    async def _retrying(self, feed: Feed, request: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, PAGE_ATTEMPTS + 1):
            try:
                return await request()
            except CrisyncError as exc:
                if not exc.retriable or attempt == PAGE_ATTEMPTS:
                    raise
                delay = full_jitter(attempt, base=1.0, cap=60.0, floor=exc.retry_after)
                log.warning(
                    "elements.page_retry",
                    feed=feed.name,
                    attempt=attempt,
                    delay=round(delay, 2),
                    error=exc.message,
                    status=exc.status,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _park(self, feed: Feed, exc: CredentialError) -> None:
        """Elements refused access: no request to this feed until an operator had time to act."""
        until = datetime.now(UTC) + timedelta(seconds=self._config.park_duration)
        message = f"{exc.message} (HTTP {exc.status}); parked until {until.isoformat()}"
        async with self._store.transaction() as conn:
            cursor = await cursors.get(conn, feed.name)
            # The next link stays: once access is back, the sweep resumes where it stopped.
            await cursors.save(
                conn,
                replace(
                    cursor, last_error=message, last_poll=datetime.now(UTC), parked_until=until
                ),
            )
        log.error(
            "elements.feed_parked",
            feed=feed.name,
            status=exc.status,
            error=exc.message,
            until=until.isoformat(),
            detail="Elements refused the credentials or the rights (401/403); check the API "
            "account, its rights and licence; this feed is tried again then",
        )

    async def _sweep_failed(self, feed: Feed, message: str, *, retriable: bool) -> None:
        async with self._store.transaction() as conn:
            cursor = await cursors.get(conn, feed.name)
            failed = replace(
                cursor, last_error=message, last_poll=datetime.now(UTC), parked_until=None
            )
            if not retriable:
                # A page that fails for good: start the sweep over from the high-water mark.
                failed = replace(failed, sweep_started=None, next_url=None)
            # A retriable failure keeps the next link: the sweep resumes at that page.
            await cursors.save(conn, failed)
