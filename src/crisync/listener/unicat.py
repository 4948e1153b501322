"""The Unicat listener: reads a project's sync stream into the inbox.

`POST /sync/get {"cc_cursor", "project", "cursor"}` answers the items after both cursors
in order; ``"warning"`` in the answer means more is waiting, and the listener asks again
at once, otherwise it waits the poll interval. Items of ``type == "cc"`` advance the
global cursor, the others the project cursor; an item at or below its stored cursor is
skipped, except job items (see ``unicat_jobs``). A page's inbox events, job updates and
both cursors are committed in one transaction.

An item is only a notice: for each INSERT or UPDATE of a configured data type the
listener fetches the item (``POST /api/p/{project}/records/get {"record": gid}``). The
inbox events it writes (feed ``unicat:{project}``, source ``unicat``):

- a record INSERT/UPDATE → kind ``record``, key the record gid, action ``upsert``,
  ``changed_at`` the record's ``updated_on``, payload::

      {"id": gid, "definition": <definition name, or its gid without one>,
       "definition_gid": gid, "language": <[unicat] language, or the record's first>,
       "title": <the record's title in that language, or null>,
       "fields": {<field name>: <value in that language>}, "status": <Unicat's status>,
       "updated_on": <Unicat's epoch seconds>}

  Only records whose definition some ``[[unicat.mappings]]`` rule names are written;
  the others are skipped with a debug line.
- a record DELETE → action ``delete``, payload ``{"id": gid}``, ``changed_at`` the time it
  was observed; a record found with status ``deleted`` (in Unicat's trash) → action
  ``delete``, payload ``{"id": gid, "status": "deleted"}``, ``changed_at`` its ``updated_on``.
- another configured data type (assets, …) → kind its singular, action as above, payload
  ``{"id": gid, "data": <the item as fetched>}``.

Because an upsert's ``changed_at`` is the item's own ``updated_on``, reading the same
change again (a repeated page, a resync from cursor 0) gives an event the inbox drops.
An item that no longer exists when fetched (422) is skipped: its DELETE follows.

A ``cc.version`` item that differs from the stored version is logged. Unconfigured data
types are ignored with a debug line. Error 1006 (invalid cursor) is logged, kept as the
feed's last error until the stream has been read to its end again, and the feed starts
over from cursor 0; the inbox and the mapping keep that from duplicating Pure objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog

from crisync.backoff import retrying
from crisync.config.model import UnicatConfig
from crisync.errors import (
    CredentialError,
    CrisyncError,
    PermanentError,
    RetriableError,
    UnicatSelectionError,
)
from crisync.listener.unicat_client import GET_ENDPOINTS, SyncPage, UnicatClient
from crisync.listener.unicat_jobs import JobEvent, JobTracker, read_job_event
from crisync.state import cursors, inbox, sync_cursors
from crisync.state.inbox import Action, ChangeEvent
from crisync.state.store import Store, utc_now
from crisync.state.sync_cursors import SyncCursor
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.listener.unicat")
T = TypeVar("T")

# Tries of one request before the poll is given up until the next one.
REQUEST_ATTEMPTS = 5
# How long the feed rests after Unicat refused the API key.
CREDENTIAL_PAUSE = 300.0
# A data type's kind in the inbox: the singular the API names its gid parameter with.
KIND_OF = {data_type: singular for data_type, (_, singular) in GET_ENDPOINTS.items()}
UPSERT_ACTIONS = frozenset({"INSERT", "UPDATE"})


@dataclass(frozen=True)
class PollResult:
    pages: int
    events_added: int
    complete: bool  # the stream was read to its end


@dataclass
class _Page:
    """What one page of the stream means, ready to be committed."""

    position: SyncCursor
    events: list[ChangeEvent] = field(default_factory=list)
    job_events: list[JobEvent] = field(default_factory=list)


class UnicatListener:
    """Polls the sync stream; every page's events and both cursors are committed together."""

    loop_name = "listener-unicat"

    def __init__(
        self,
        config: UnicatConfig,
        client: UnicatClient,
        store: Store,
        *,
        work_ready: asyncio.Event,
        outbox_ready: asyncio.Event,
        stopping: asyncio.Event,
        telemetry: Telemetry,
        topic_prefix: str | None,
    ) -> None:
        self._config = config
        self._client = client
        self._store = store
        self._work_ready = work_ready
        self._stopping = stopping
        self._telemetry = telemetry
        self._jobs = JobTracker(
            self.feed,
            topic_prefix=topic_prefix,
            stall_after=config.job_stall_after,
            outbox_ready=outbox_ready,
        )
        self._fetch_slots = asyncio.Semaphore(config.fetch_concurrency)
        # Set while a resync after 1006 has not reached the end of the stream yet.
        self._resync_note: str | None = None

    @property
    def feed(self) -> str:
        return f"unicat:{self._config.project}"

    @property
    def beat_deadline(self) -> float:
        """Longest silence of a healthy listener: a wait, then a page and its fetches retried."""
        return self._config.poll_interval + 2 * REQUEST_ATTEMPTS * (self._config.timeout + 60)

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Poll, wait the poll interval (longer when the key was refused), until told to stop."""
        while not self._stopping.is_set():
            parked = await self._parked_for()
            if parked <= 0:
                await self.poll()
                parked = self._config.poll_interval
            self._telemetry.beat(self.loop_name)
            try:
                wait = min(parked, self._config.poll_interval)
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)
            except TimeoutError:
                continue

    async def poll(self) -> PollResult:
        """Read the stream to its end (or until stopped); failures are recorded, not raised."""
        started = datetime.now(UTC)
        try:
            result = await self._read_stream(started)
        except CredentialError as exc:
            log.error(  # noqa: TRY400 - a refused key is no bug: the message says it all
                "unicat.credentials_rejected",
                feed=self.feed,
                error=exc.message,
                pause_seconds=CREDENTIAL_PAUSE,
            )
            await self._record_failure(exc, park=True)
            result = PollResult(0, 0, complete=False)
        except CrisyncError as exc:
            log.log(
                logging.WARNING if exc.retriable else logging.ERROR,
                "unicat.poll_failed",
                feed=self.feed,
                error=exc.message,
                status=exc.status,
                error_class=type(exc).__name__,
            )
            await self._record_failure(exc, park=False)
            result = PollResult(0, 0, complete=False)
        async with self._store.transaction() as conn:
            await self._jobs.mark_stalled(conn, datetime.now(UTC))
        self._telemetry.beat(self.loop_name)
        return result

    async def _read_stream(self, started: datetime) -> PollResult:
        async with self._store.reading() as conn:
            position = await sync_cursors.get(conn, self.feed)
        pages = added = 0
        while True:
            try:
                page = await self._request(self._page_after(position), "/sync/get")
            except UnicatSelectionError as exc:
                if position.cc_cursor == position.cursor == 0:
                    raise  # even the start of the stream is refused: nothing to fall back to
                position = await self._start_over(position, exc)
                continue
            observed = datetime.now(UTC)
            work = await self._read_page(page, position, observed)
            if page.more and work.position == position:
                # "More is waiting" from a page that moves no cursor would be asked for again
                # and again: a hot loop against the API. Give up until the next poll.
                raise RetriableError(
                    "/sync/get: more is waiting, but the page moved no cursor", api="unicat"
                )
            page_added = await self._commit(work, observed, started, complete=not page.more)
            position = work.position
            pages += 1
            added += page_added
            self._telemetry.received(self.feed, page_added)
            self._telemetry.beat(self.loop_name)
            if not page.more:
                log.info("unicat.poll_done", feed=self.feed, pages=pages, events_added=added)
                return PollResult(pages, added, complete=True)
            if self._stopping.is_set():
                return PollResult(pages, added, complete=False)

    def _page_after(self, position: SyncCursor) -> Callable[[], Awaitable[SyncPage]]:
        return lambda: self._client.sync_get(position.cc_cursor, position.cursor)

    async def _start_over(self, position: SyncCursor, exc: UnicatSelectionError) -> SyncCursor:
        """Unicat refused the cursors (1006): read the whole stream again from 0."""
        self._resync_note = (
            f"{exc.message}; cursors cc={position.cc_cursor} project={position.cursor} refused, "
            "resynchronising from cursor 0"
        )
        log.error(
            "unicat.cursor_invalid",
            feed=self.feed,
            error=exc.message,
            cc_cursor=position.cc_cursor,
            cursor=position.cursor,
            action="resynchronising from cursor 0",
        )
        restart = SyncCursor(self.feed, 0, 0, position.cc_version)
        async with self._store.transaction() as conn:
            await sync_cursors.save(conn, restart)
            health = await cursors.get(conn, self.feed)
            await cursors.save(
                conn, replace(health, last_error=self._resync_note, last_poll=datetime.now(UTC))
            )
        return restart

    async def _commit(
        self, work: _Page, observed: datetime, started: datetime, *, complete: bool
    ) -> int:
        # A resync after 1006 stays the feed's last error until the stream's end is reached.
        last_error = None if complete else self._resync_note
        async with self._store.transaction() as conn:
            added = await inbox.add_events(conn, work.events, utc_now())
            await self._jobs.apply(conn, work.job_events, observed)
            await sync_cursors.save(conn, work.position)
            health = await cursors.get(conn, self.feed)
            await cursors.save(
                conn,
                replace(
                    health,
                    high_water=started if complete else health.high_water,
                    last_error=last_error,
                    last_poll=observed,
                    parked_until=None,
                ),
            )
        self._resync_note = last_error
        if work.events:
            self._work_ready.set()
        return added

    async def _record_failure(self, exc: CrisyncError, *, park: bool) -> None:
        now = datetime.now(UTC)
        async with self._store.transaction() as conn:
            health = await cursors.get(conn, self.feed)
            parked_until = now + timedelta(seconds=CREDENTIAL_PAUSE) if park else None
            await cursors.save(
                conn,
                replace(health, last_error=exc.message, last_poll=now, parked_until=parked_until),
            )

    async def _parked_for(self) -> float:
        async with self._store.reading() as conn:
            health = await cursors.get(conn, self.feed)
        if health.parked_until is None:
            return 0.0
        return (health.parked_until - datetime.now(UTC)).total_seconds()

    # ----------------------------------------------------------------- one page

    async def _read_page(self, page: SyncPage, position: SyncCursor, observed: datetime) -> _Page:
        """Sort the page's items, in order, into cursor moves, jobs and items to fetch."""
        work = _Page(position)
        notices: list[tuple[str, str, str]] = []  # (data type, action, gid), in stream order
        for item in page.items:
            if not _readable(item):
                if not isinstance(item, dict) or not isinstance(item.get("cursor"), int):
                    raise PermanentError(
                        f"/sync/get: sync item without a cursor: {item!r:.200}", api="unicat"
                    )
                log.warning("unicat.item_unreadable", item=repr(item)[:200])
                work.position = _advanced(work.position, item)
                continue
            if item["data_type"] == "jobs":
                job_event = read_job_event(item, observed)
                if job_event is not None:
                    work.job_events.append(job_event)
                work.position = _advanced(work.position, item)
                continue
            if item["cursor"] <= _stream_cursor(work.position, item):
                continue  # read before: at or below the stored cursor
            work.position = _advanced(work.position, item)
            self._take_notice(item, work, notices)
        fetched = await self._fetch_all(
            {(data_type, gid) for data_type, action, gid in notices if action in UPSERT_ACTIONS}
        )
        for data_type, action, gid in notices:
            event = await self._event(data_type, action, gid, fetched, observed)
            if event is not None:
                work.events.append(event)
        return work

    def _take_notice(
        self, item: dict[str, Any], work: _Page, notices: list[tuple[str, str, str]]
    ) -> None:
        data_type, key, action = item["data_type"], str(item["data_key"]), item["action"]
        if data_type == "cc.version":
            if key != work.position.cc_version:
                log.log(
                    logging.INFO if work.position.cc_version is None else logging.WARNING,
                    "unicat.version_changed",
                    feed=self.feed,
                    previous=work.position.cc_version,
                    version=key,
                )
                work.position = replace(work.position, cc_version=key)
            return
        if data_type == "definitions":
            self._client.forget_definition(key)
        if data_type in self._config.data_types and (
            action in UPSERT_ACTIONS or action == "DELETE"
        ):
            notices.append((data_type, action, key))
        else:
            log.debug("unicat.item_ignored", data_type=data_type, action=action, key=key)

    async def _fetch_all(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """Each wanted item at its current state (None when gone), a few requests at once."""
        fetched: dict[tuple[str, str], Any] = {}

        async def fetch(data_type: str, gid: str) -> None:
            async with self._fetch_slots:
                fetched[(data_type, gid)] = await self._request(
                    lambda: self._client.get_item(data_type, gid), f"/{data_type}/get"
                )

        try:
            async with asyncio.TaskGroup() as group:
                for data_type, gid in sorted(wanted):
                    group.create_task(fetch(data_type, gid), name=f"unicat-fetch-{gid}")
        except* CrisyncError as failures:
            raise failures.exceptions[0] from None
        return fetched

    async def _event(
        self,
        data_type: str,
        action: str,
        gid: str,
        fetched: dict[tuple[str, str], Any],
        observed: datetime,
    ) -> ChangeEvent | None:
        kind = KIND_OF[data_type]
        if action == "DELETE":
            return self._change(kind, gid, "delete", observed, {"id": gid})
        item = fetched[(data_type, gid)]
        if item is None:
            log.info("unicat.item_gone", data_type=data_type, key=gid)
            return None
        changed_at = _changed_at(item, observed)
        if item.get("status") == "deleted":
            return self._change(kind, gid, "delete", changed_at, {"id": gid, "status": "deleted"})
        if data_type != "records":
            return self._change(kind, gid, "upsert", changed_at, {"id": gid, "data": item})
        payload = await self._record_payload(item)
        if not self._mapped(payload):
            log.debug("unicat.record_unmapped", key=gid, definition=payload["definition"])
            return None
        return self._change(kind, gid, "upsert", changed_at, payload)

    def _change(
        self, kind: str, key: str, action: Action, changed_at: datetime, payload: dict[str, Any]
    ) -> ChangeEvent:
        return ChangeEvent(self.feed, "unicat", kind, key, action, changed_at, payload)

    async def _record_payload(self, record: dict[str, Any]) -> dict[str, Any]:
        definition_gid = str(record.get("definition") or "")
        name = None
        if definition_gid:
            name = await self._request(
                lambda: self._client.definition_name(definition_gid), "/definitions/get"
            )
        by_language = _mapping(record.get("fields"))
        language = self._config.language
        if language not in by_language and by_language:
            language = next(iter(by_language))
        titles = _mapping(record.get("title"))
        return {
            "id": record.get("gid"),
            "definition": name or definition_gid,
            "definition_gid": definition_gid,
            "language": language,
            "title": titles.get(language),
            "fields": _mapping(by_language.get(language)),
            "status": record.get("status"),
            "updated_on": record.get("updated_on"),
        }

    def _mapped(self, payload: dict[str, Any]) -> bool:
        return any(
            rule.applies_to(payload["definition"], payload["definition_gid"])
            for rule in self._config.mappings
        )

    async def _request(self, operation: Callable[[], Awaitable[T]], endpoint: str) -> T:
        def on_retry(attempt: int, delay: float, exc: CrisyncError) -> None:
            log.warning(
                "unicat.request_retry",
                endpoint=endpoint,
                attempt=attempt,
                delay=round(delay, 2),
                error=exc.message,
                status=exc.status,
            )

        return await retrying(operation, attempts=REQUEST_ATTEMPTS, on_retry=on_retry)


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _readable(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("cursor"), int)
        and isinstance(item.get("data_type"), str)
        and isinstance(item.get("action"), str)
        and item.get("data_key") is not None
    )


def _stream_cursor(position: SyncCursor, item: dict[str, Any]) -> int:
    return position.cc_cursor if item.get("type") == "cc" else position.cursor


def _advanced(position: SyncCursor, item: dict[str, Any]) -> SyncCursor:
    if item.get("type") == "cc":
        return replace(position, cc_cursor=max(position.cc_cursor, item["cursor"]))
    return replace(position, cursor=max(position.cursor, item["cursor"]))


def _changed_at(item: dict[str, Any], observed: datetime) -> datetime:
    updated_on = item.get("updated_on")
    if isinstance(updated_on, int | float) and not isinstance(updated_on, bool):
        return datetime.fromtimestamp(updated_on, UTC)
    return observed
