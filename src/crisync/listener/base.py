"""The Source contract, and the loop mechanics every source's feeds share.

A source is an outside system crisync reads changes from (Elements, Unicat). It lives in
a folder of its own below ``listener/``: its configuration section, its client and error
table, its feed loops, its simulator. What it gives the pipeline is a `Source`: the kinds
its feeds produce (each needs a mapping, checked with the configuration), the loops the
daemon runs, the resync of one object, and any handlers of its own (Elements' write-back).

Its feed loops write change events into the inbox and move their cursors in one
transaction; they never call a handler. `FeedLoop` gives them one way to retry a
request, to rest when the API refuses the credentials, and to record a feed's health.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import aiohttp
import structlog

from crisync import credentials
from crisync.backoff import retrying
from crisync.errors import CredentialError, CrisyncError, PermanentError
from crisync.handlers.base import Handler
from crisync.lifecycle import Lifecycle
from crisync.state import cursors, inbox, mapping
from crisync.state.cursors import Cursor
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.store import StateDiskFullError, Store, utc_now
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.listener")
T = TypeVar("T")

# Tries of one request before the feed gives up until its next poll.
REQUEST_ATTEMPTS = 5


@dataclass(frozen=True)
class Loop:
    """A long-running coroutine the daemon starts in its TaskGroup under this name."""

    name: str
    beat_deadline: float  # the longest silence of a healthy loop, for health checks
    run: Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class SourceContext:
    """The shared resources a source's loops use, entered once by the daemon."""

    store: Store
    session: aiohttp.ClientSession
    life: Lifecycle
    telemetry: Telemetry
    topic_prefix: str | None = None  # MQTT on: the prefix of a source's own retained topics
    planning: bool = False  # `crisync plan`: read the source, never write to it


class Source(ABC):
    """An outside system crisync reads changes from."""

    # The events' source: also its configuration section and its [mappings.<name>.<kind>].
    name: ClassVar[str]

    @abstractmethod
    def kinds(self) -> frozenset[str]:
        """The kinds of object its feeds produce; each needs a mapping."""

    @abstractmethod
    def loops(self, *, once: bool) -> list[Loop]:
        """Its feed loops: polling until stopped, or one sweep each when `once`."""

    async def start(self) -> None:  # noqa: B027 - most sources have nothing to check first
        """Checks worth making once, before the first poll and the first write (a
        misconfiguration is told now; SourceRefusedError stops the run, exit 78)."""

    async def resync(self, kind: str, key: str) -> ChangeEvent:
        """The object as the source holds it now, as an upsert event (not queued yet)."""
        raise PermanentError(f"resync of {self.name} objects is not supported yet", api="crisync")

    def routes(self) -> dict[tuple[str, str], Handler]:
        """Handlers of its own, by (source, kind) of the events they take (e.g. write-back)."""
        return {}

    def after_create(
        self, event: InboxEvent, target_type: str, target_uuid: str
    ) -> tuple[ChangeEvent, ...]:
        """Work a target's create of one of its objects calls for (queued with the outcome)."""
        return ()


class FeedLoop:
    """The base of every feed loop: what every feed does alike. Requests retried with backoff,
    a rest when the API refuses the credentials, and each feed's health (last poll, last
    error, parked) in its cursor."""

    def __init__(self, context: SourceContext, *, api: str, park_duration: float) -> None:
        self.api = api
        self._store = context.store
        self._life = context.life
        self._telemetry = context.telemetry
        self._park_duration = park_duration
        # Feeds this run parked. A park an earlier run recorded is not kept to: a restart is
        # what an operator does after correcting the secret, so its feeds ask again at once.
        self._parked: set[str] = set()

    async def request(self, feed: str, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """One request, its retriable failures tried again; the last failure is raised."""

        def on_retry(attempt: int, delay: float, exc: CrisyncError) -> None:
            log.warning(
                "feed.request_retry",
                api=self.api,
                feed=feed,
                request=what,
                attempt=attempt,
                delay=round(delay, 2),
                error=exc.message,
                status=exc.status,
            )

        return await retrying(operation, attempts=REQUEST_ATTEMPTS, on_retry=on_retry)

    def read_to_the_end(
        self, event: str, feed: str, *, pages: int, added: int, **details: str
    ) -> None:
        """Say a feed was read to its end: at info when it brought changes; a poll that found
        nothing is the daemon idling, said at debug (every minute, all day long)."""
        log.log(
            logging.INFO if added else logging.DEBUG,
            event,
            feed=feed,
            pages=pages,
            events_added=added,
            **details,
        )

    async def parked_until(self, feed: str) -> datetime | None:
        """When a feed whose credentials were refused may ask again; None: it may now."""
        if feed not in self._parked:
            return None
        async with self._store.reading() as conn:
            cursor = await cursors.get(conn, feed)
        if cursor.parked_until is None or cursor.parked_until <= datetime.now(UTC):
            return None
        return cursor.parked_until

    async def failed(
        self, feed: str, exc: BaseException, *, restart: Callable[[Cursor], Cursor]
    ) -> None:
        """Record why a poll of the feed gave up; `restart` says where a permanent failure
        leaves the feed's position. Refused credentials park the feed."""
        if isinstance(exc, StateDiskFullError):
            # Nothing can be recorded: the daemon stops and says why, once, without a trace.
            raise exc
        now = datetime.now(UTC)
        if isinstance(exc, CredentialError):
            until = credentials.refused(exc, pause=self._park_duration, feed=feed)
            self._parked.add(feed)
            message = f"{credentials.refusal(exc)}; parked until {until.isoformat()}"
            # The position stays: once access is back, the feed resumes where it stopped.
            await self._update(feed, lambda c: replace(c, last_error=message, parked_until=until))
            return
        if isinstance(exc, CrisyncError):
            message, retriable = exc.message, exc.retriable
            log.log(
                logging.WARNING if retriable else logging.ERROR,
                "feed.failed",
                api=self.api,
                feed=feed,
                error=exc.message,
                status=exc.status,
                error_class=type(exc).__name__,
            )
        else:
            message, retriable = f"internal error: {exc!r}", False
            log.error("feed.crashed", api=self.api, feed=feed, exc_info=exc)

        def record(cursor: Cursor) -> Cursor:
            cursor = replace(cursor, last_error=message, last_poll=now, parked_until=None)
            # A retriable failure keeps the position: the feed resumes there.
            return cursor if retriable else restart(cursor)

        await self._update(feed, record)

    async def _update(self, feed: str, change: Callable[[Cursor], Cursor]) -> None:
        async with self._store.transaction() as conn:
            cursor = await cursors.get(conn, feed)
            await cursors.save(conn, change(replace(cursor, last_poll=datetime.now(UTC))))


async def queue_resync(store: Store, event: ChangeEvent) -> None:
    """Queue an object fetched again for replication, whatever its state.

    It goes into the inbox like any feed page's event (a running daemon takes it within
    seconds; otherwise the next `crisync once` or `crisync run` does). Its mapping row, if
    any, forgets the payload hash and the lock, so its target writes and locks the content
    again even when the source did not change: a resync repairs what was edited, unlocked
    or deleted in the target since.
    """
    async with store.transaction() as conn:
        await inbox.add_events(conn, [event], utc_now())
        known = await mapping.get(conn, event.source, event.kind, event.key)
        if known is not None:
            await mapping.put(conn, replace(known, payload_hash=b"", locked=False, written=None))
