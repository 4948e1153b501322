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

- a record INSERT/UPDATE → kind ``record`` (with ``[unicat] definitions``, the definition
  as listed there), key the record gid, action ``upsert``,
  ``changed_at`` the record's ``updated_on``, payload::

      {"id": gid, "definition": <definition name, or its gid without one>,
       "definition_gid": gid, "language": <[unicat] language, or the record's first>,
       "title": <the record's title in that language, or null>,
       "fields": {<field name>: <value in that language>}, "status": <Unicat's status>,
       "updated_on": <Unicat's epoch seconds>}

  With ``[unicat] definitions`` set, only records of those definitions are written;
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
over from cursor 0; the inbox and the mapping keep that from duplicating any content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import structlog

from crisync.errors import CrisyncError, PermanentError, RetriableError
from crisync.listener.base import REQUEST_ATTEMPTS, FeedLoop, SourceContext
from crisync.listener.unicat.client import SyncPage, UnicatClient
from crisync.listener.unicat.config import KIND_OF_DATA_TYPE, RECORD, UnicatConfig
from crisync.listener.unicat.errors import UnicatSelectionError
from crisync.listener.unicat.jobs import JobEvent, JobTracker, read_job_event
from crisync.state import cursors, inbox, mapping, sync_cursors
from crisync.state.inbox import Action, ChangeEvent
from crisync.state.store import utc_now
from crisync.state.sync_cursors import SyncCursor

log = structlog.get_logger("crisync.listener.unicat")
T = TypeVar("T")

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


class UnicatListener(FeedLoop):
    """Polls the sync stream; every page's events and both cursors are committed together."""

    loop_name = "listener-unicat"

    def __init__(self, config: UnicatConfig, client: UnicatClient, context: SourceContext) -> None:
        super().__init__(context, api="unicat", park_duration=config.park_duration)
        self._config = config
        self._client = client
        self._jobs = JobTracker(
            self.feed,
            topic_prefix=context.topic_prefix,
            stall_after=config.job_stall_after,
            retain_for=config.job_retain_for,
            outbox_written=partial(context.store.wake_after_commit, context.life.outbox_ready),
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
        """Poll every poll interval until told to stop; a parked feed skips its polls."""
        while not self._life.stopping.is_set():
            started = time.monotonic()
            parked_until = await self.parked_until(self.feed)
            if parked_until is None:
                await self.poll()
            self._telemetry.beat(self.loop_name)
            await self._life.wait_next_round(started, self._config.poll_interval)

    async def poll(self) -> PollResult:
        """Read the stream to its end (or until stopped); failures are recorded, not raised."""
        started = datetime.now(UTC)
        try:
            result = await self._read_stream(started)
        except Exception as exc:  # noqa: BLE001 - recorded as the feed's health, said in the log
            await self.failed(self.feed, exc, restart=lambda cursor: cursor)
            result = PollResult(0, 0, complete=False)
        async with self._store.transaction() as conn:
            now = datetime.now(UTC)
            await self._jobs.mark_stalled(conn, now)
            await self._jobs.forget_finished(conn, now)
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
                self.read_to_the_end("unicat.poll_done", self.feed, pages=pages, added=added)
                return PollResult(pages, added, complete=True)
            if self._life.stopping.is_set():
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
            health = await cursors.get(conn, self.feed)
            # Until the stream was read to its end once, or while it is read again from 0
            # (cursors refused), it brings everything: backfill work.
            backfill = health.high_water is None or self._resync_note is not None
            added = await inbox.add_events(conn, work.events, utc_now(), backfill=backfill)
            await self._jobs.apply(conn, work.job_events, observed)
            await sync_cursors.save(conn, work.position)
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
            self._life.work_ready.set()
        return added

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
        if action == "DELETE":
            if data_type == "records":
                return await self._record_deleted(gid, observed)
            return self._change(KIND_OF_DATA_TYPE[data_type], gid, "delete", observed, {"id": gid})
        item = fetched[(data_type, gid)]
        if item is None:
            log.info("unicat.item_gone", data_type=data_type, key=gid)
            return None
        changed_at = _changed_at(item, observed)
        if data_type == "records":
            return await self._record_event(gid, item, changed_at)
        if item.get("status") == "deleted":
            deleted = {"id": gid, "status": "deleted"}
            return self._change(KIND_OF_DATA_TYPE[data_type], gid, "delete", changed_at, deleted)
        payload = {"id": gid, "data": item}
        return self._change(KIND_OF_DATA_TYPE[data_type], gid, "upsert", changed_at, payload)

    async def _record_event(
        self, gid: str, record: dict[str, Any], changed_at: datetime
    ) -> ChangeEvent | None:
        """A record as fetched: its definition decides its kind, or that it is not read."""
        payload = await self._record_payload(record)
        kind = self._config.record_kind(payload["definition"], payload["definition_gid"])
        if kind is None:
            log.debug("unicat.record_not_read", key=gid, definition=payload["definition"])
            return None
        if record.get("status") == "deleted":
            return self._change(kind, gid, "delete", changed_at, {"id": gid, "status": "deleted"})
        return self._change(kind, gid, "upsert", changed_at, payload)

    async def _record_deleted(self, gid: str, observed: datetime) -> ChangeEvent | None:
        """A record's DELETE names no definition: its kind is the one it was read as."""
        kind: str | None = RECORD
        if self._config.definitions:
            kinds = self._config.definitions
            async with self._store.reading() as conn:
                kind = await mapping.kind_of(conn, "unicat", kinds, gid) or await inbox.kind_of(
                    conn, "unicat", kinds, self.feed, gid
                )
        if kind is None:
            log.debug("unicat.unknown_record_deleted", key=gid)
            return None  # never read: nothing of it to delete
        return self._change(kind, gid, "delete", observed, {"id": gid})

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

    async def _request(self, operation: Callable[[], Awaitable[T]], endpoint: str) -> T:
        return await self.request(self.feed, operation, endpoint)


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
