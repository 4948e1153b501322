"""The Elements listener: sweeps each category's affected-since feed into the inbox."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

import aiohttp
import structlog

from crisync.backoff import full_jitter
from crisync.config.model import ElementsConfig
from crisync.errors import (
    CredentialError,
    CrisyncError,
    classify_exception,
    classify_status,
    parse_retry_after,
)
from crisync.listener.atom import FeedPage, parse_error, parse_feed
from crisync.state import cursors, inbox
from crisync.state.inbox import ChangeEvent
from crisync.state.store import Store, utc_now
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.listener.elements")

# Feed (plural) name → the api:object category it lists.
CATEGORY_OF_FEED = {"users": "user", "publications": "publication"}
# Tries of one page before the sweep is given up until the next poll.
PAGE_ATTEMPTS = 5


class ElementsClient:
    """GETs against the Elements API: Basic auth, a gap between requests, errors classified."""

    def __init__(
        self, session: aiohttp.ClientSession, config: ElementsConfig, *, telemetry: Telemetry
    ) -> None:
        self._session = session
        self._config = config
        self._telemetry = telemetry
        self._headers = {
            "Authorization": aiohttp.encode_basic_auth(
                config.username, config.password.get_secret_value()
            )
        }
        self._gap_lock = asyncio.Lock()
        self._last_request = 0.0

    async def _polite_pause(self) -> None:
        async with self._gap_lock:
            wait = self._last_request + self._config.request_gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_request = time.monotonic()

    async def get_feed(self, url: str) -> tuple[FeedPage, datetime]:
        """One feed page and the server's clock (HTTP Date) when it answered."""
        await self._polite_pause()
        started, status = time.monotonic(), "failed"
        try:
            async with self._session.get(
                url,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            ) as response:
                status = str(response.status)
                body = await response.read()
                if response.status != 200:
                    error = parse_error(body)
                    detail = (
                        f"{error.code}: {error.message}" if error else f"HTTP {response.status}"
                    )
                    raise classify_status(
                        "elements",
                        response.status,
                        detail,
                        parse_retry_after(response.headers.get("Retry-After")),
                    )
                server_time = _server_date(response.headers.get("Date"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
            raise classify_exception("elements", exc) from exc
        finally:
            self._telemetry.request("elements", "GET", status, time.monotonic() - started)
        return parse_feed(body), server_time


def _server_date(header: str | None) -> datetime:
    if header:
        try:
            return parsedate_to_datetime(header).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    # Without a usable Date the local clock is the only clock; the lookback absorbs skew.
    log.warning("elements.no_server_date")
    return datetime.now(UTC)


@dataclass(frozen=True)
class SweepResult:
    feed: str
    pages: int
    events_added: int
    complete: bool


class ElementsListener:
    """Sweeps feeds; every page's events and the cursor are committed together."""

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

    @property
    def loop_name(self) -> str:
        return "listener-elements"

    @property
    def beat_deadline(self) -> float:
        """Longest silence of a healthy listener: a wait, then a page with all its retries."""
        return self._config.poll_interval + PAGE_ATTEMPTS * (self._config.timeout + 60)

    @staticmethod
    def feed_name(category_feed: str) -> str:
        return f"elements:{category_feed}"

    def _first_url(self, category_feed: str, high_water: datetime | None) -> str:
        query = {"detail": "full", "per-page": str(self._config.per_page)}
        if high_water is not None:
            since = high_water - timedelta(seconds=self._config.lookback)
            query["affected-since"] = since.isoformat(timespec="milliseconds")
        # urlencode percent-encodes '+' in the offset, which a raw query would turn into a space.
        return f"{self._config.url}/{category_feed}?{urlencode(query)}"

    async def sweep(self, category_feed: str) -> SweepResult:
        feed = self.feed_name(category_feed)
        async with self._store.reading() as conn:
            cursor = await cursors.get(conn, feed)
        if cursor.next_url:
            url, sweep_started = cursor.next_url, cursor.sweep_started
            log.info("elements.sweep_resumed", feed=feed, url=url)
        else:
            url, sweep_started = self._first_url(category_feed, cursor.high_water), None
        followed: set[str] = set()
        pages = added = 0
        while True:
            followed.add(url)
            page, server_time = await self._fetch_page(feed, url)
            sweep_started = sweep_started or server_time
            next_url = page.next_url
            if next_url is not None and next_url in followed:
                raise CrisyncError(f"next link loops back to {next_url}", api="elements")
            events = [
                ChangeEvent(
                    feed, "elements", obj.category, obj.id, "upsert", obj.changed_at, obj.payload
                )
                for obj in page.objects
                if obj.category == CATEGORY_OF_FEED[category_feed]
            ]
            async with self._store.transaction() as conn:
                page_added = await inbox.add_events(conn, events, utc_now())
                high_water: datetime | None = sweep_started
                sweep_started_now: datetime | None = None
                if next_url is not None:
                    high_water, sweep_started_now = cursor.high_water, sweep_started
                cursor = replace(
                    cursor,
                    high_water=high_water,
                    sweep_started=sweep_started_now,
                    next_url=next_url,
                    last_error=None,
                    last_poll=datetime.now(UTC),
                )
                await cursors.save(conn, cursor)
            pages += 1
            added += page_added
            self._telemetry.received(feed, page_added)
            self._telemetry.beat(self.loop_name)
            if events:
                self._work_ready.set()
            if next_url is None:
                log.info(
                    "elements.sweep_done",
                    feed=feed,
                    pages=pages,
                    events_added=added,
                    high_water=sweep_started.isoformat(),
                )
                return SweepResult(feed, pages, added, complete=True)
            if self._stopping.is_set():
                # The stored next link resumes this sweep at the next start.
                return SweepResult(feed, pages, added, complete=False)
            url = next_url

    async def _fetch_page(self, feed: str, url: str) -> tuple[FeedPage, datetime]:
        for attempt in range(1, PAGE_ATTEMPTS + 1):
            try:
                return await self._client.get_feed(url)
            except CrisyncError as exc:
                if not exc.retriable or attempt == PAGE_ATTEMPTS:
                    raise
                delay = full_jitter(attempt, base=1.0, cap=60.0, floor=exc.retry_after)
                log.warning(
                    "elements.page_retry",
                    feed=feed,
                    attempt=attempt,
                    delay=round(delay, 2),
                    error=exc.message,
                    status=exc.status,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def sweep_all(self) -> None:
        """One sweep of every configured category; a failing feed does not stop the others."""
        for category_feed in self._config.categories:
            feed = self.feed_name(category_feed)
            try:
                await self.sweep(category_feed)
            except CrisyncError as exc:
                level = (
                    "error" if isinstance(exc, CredentialError) or not exc.retriable else "warning"
                )
                log.log(
                    _LEVELS[level],
                    "elements.sweep_failed",
                    feed=feed,
                    error=exc.message,
                    status=exc.status,
                    error_class=type(exc).__name__,
                )
                async with self._store.transaction() as conn:
                    cursor = await cursors.get(conn, feed)
                    failed = replace(cursor, last_error=exc.message, last_poll=datetime.now(UTC))
                    if not exc.retriable:
                        # A page that fails for good: start the sweep over from the high-water mark.
                        failed = replace(failed, sweep_started=None, next_url=None)
                    # A retriable failure keeps the next link: the sweep resumes at that page.
                    await cursors.save(conn, failed)
            if self._stopping.is_set():
                return

    async def run(self) -> None:
        """Sweep, wait the poll interval, repeat until told to stop."""
        while not self._stopping.is_set():
            await self.sweep_all()
            self._telemetry.beat(self.loop_name)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self._config.poll_interval)
            except TimeoutError:
                continue


_LEVELS = {"warning": 30, "error": 40}
