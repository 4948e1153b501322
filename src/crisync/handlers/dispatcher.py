"""The dispatcher: inbox events to handlers, one key at a time, several keys at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiosqlite
import structlog

from crisync.backoff import full_jitter
from crisync.errors import CredentialError, CrisyncError, ErrorInfo
from crisync.handlers.base import Handler, HandlerContext, HandlerResult
from crisync.outcome import outcome_payload, outcome_topic
from crisync.state import create_intents, dead_letters, inbox, mapping, outbox
from crisync.state.inbox import InboxEvent
from crisync.state.store import Store, iso_utc, utc_now
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.handlers")

# How long work pauses after an API refused our credentials: long enough not to hammer it.
CREDENTIAL_PAUSE = 300.0
# Processed inbox rows are kept this long, to drop feed repeats (the lookback is shorter).
INBOX_RETENTION = timedelta(days=1)
PRUNE_EVERY = 3600.0
IDLE_WAKE = 5.0
# Keys claimed ahead, per worker: the queue is refilled when it runs low, not per event.
PREFETCH = 4


@dataclass(frozen=True)
class DispatchSettings:
    concurrency: int
    max_attempts: int
    topic_prefix: str | None  # None: MQTT is off, no outcomes are kept
    # (source, kind) -> the kinds of that source its mapping refers to (MappingsConfig.referred)
    refers_to: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)


class Dispatcher:
    """Claims the newest pending event of each idle key and hands it to its handler.

    Only one event per key is in flight, so one key's changes apply in order; older
    pending events of a key are superseded by the newest one. An event waits while
    events of a kind it refers to run or come before it: a publication replicated
    while its author's user is still on the way would name an external person instead.
    """

    loop_name = "dispatcher"
    # The loop wakes every IDLE_WAKE seconds at the latest; only a stall is longer.
    beat_deadline = 120.0

    def __init__(
        self,
        store: Store,
        handlers: dict[tuple[str, str], Handler],
        context: HandlerContext,
        settings: DispatchSettings,
        *,
        work_ready: asyncio.Event,
        outbox_ready: asyncio.Event,
        stopping: asyncio.Event,
        feeds_done: asyncio.Event,
        telemetry: Telemetry,
    ) -> None:
        self._telemetry = telemetry
        self._store = store
        self._handlers = handlers
        self._context = context
        self._settings = settings
        self._work_ready = work_ready
        self._outbox_ready = outbox_ready
        self._stopping = stopping
        self._feeds_done = feeds_done
        self._busy: dict[str, InboxEvent] = {}  # claimed, by object key
        self._paused_until = 0.0
        self._last_prune = 0.0

    async def run(self) -> None:
        """Until stopped, or, once the feeds are done, until nothing is pending."""
        queue: asyncio.Queue[InboxEvent | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as workers:
            for number in range(self._settings.concurrency):
                workers.create_task(self._work(queue), name=f"dispatcher-worker-{number}")
            try:
                await self._feed(queue)
            finally:
                for _ in range(self._settings.concurrency):
                    queue.put_nowait(None)

    async def _feed(self, queue: asyncio.Queue[InboxEvent | None]) -> None:
        while not self._stopping.is_set():
            self._telemetry.beat(self.loop_name)
            self._work_ready.clear()
            claimed = await self._claim()
            for event in claimed:
                queue.put_nowait(event)
            if claimed or self._busy:
                # Workers wake this loop as they finish; nothing else to ask the database.
                await self._wait_for_work(IDLE_WAKE)
            elif await self._drained():
                return
            else:
                await self._wait_for_work(await self._idle_timeout())

    async def _claim(self) -> list[InboxEvent]:
        """Refill the queue once it runs low, with up to PREFETCH keys' newest events."""
        if len(self._busy) > self._settings.concurrency or time.monotonic() < self._paused_until:
            return []
        free = self._settings.concurrency * PREFETCH - len(self._busy)
        async with self._store.reading() as conn:
            ready = await inbox.claim_ready(conn, busy_keys=self._busy, now=utc_now(), limit=free)
        events = self._after_what_they_refer_to(ready)
        self._busy.update((event.object_key, event) for event in events)
        await self._prune_now_and_then()
        return events

    def _after_what_they_refer_to(self, ready: list[InboxEvent]) -> list[InboxEvent]:
        """The ready events (oldest first) but those whose referred kinds run before them.

        The first event is always taken when nothing runs, so a cycle of references between
        kinds cannot stop the dispatcher.
        """
        running = {(event.source, event.kind) for event in self._busy.values()}
        taken = []
        for event in ready:
            referred = self._settings.refers_to.get((event.source, event.kind), frozenset())
            if any((event.source, kind) in running for kind in referred):
                continue  # left pending: claimed again once those are done
            taken.append(event)
            running.add((event.source, event.kind))
        return taken

    async def _drained(self) -> bool:
        """True when the feeds are done and no event waits, not even for a retry."""
        if not self._feeds_done.is_set():
            return False
        async with self._store.reading() as conn:
            return await inbox.pending_count(conn) == 0

    async def _idle_timeout(self) -> float:
        """How long an idle dispatcher may sleep: until the next retry or the end of a pause."""
        timeout = IDLE_WAKE
        async with self._store.reading() as conn:
            retry_at = await inbox.next_retry_at(conn)
        if retry_at is not None:
            due = (datetime.fromisoformat(retry_at) - datetime.now(UTC)).total_seconds()
            timeout = min(timeout, max(due, 0.01))
        if self._paused_until:
            timeout = min(timeout, max(self._paused_until - time.monotonic(), 0.01))
        return timeout

    async def _wait_for_work(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work_ready.wait(), timeout=seconds)

    async def _work(self, queue: asyncio.Queue[InboxEvent | None]) -> None:
        while (event := await queue.get()) is not None:
            try:
                if not self._stopping.is_set():
                    await self._process(event)
            finally:
                self._busy.pop(event.object_key, None)
                if len(self._busy) <= self._settings.concurrency:
                    self._work_ready.set()

    async def _process(self, event: InboxEvent) -> None:
        attempt = event.attempts + 1
        bound = log.bind(source=event.source, kind=event.kind, key=event.key, attempt=attempt)
        handler = self._handlers.get((event.source, event.kind))
        started = time.monotonic()
        try:
            result = await (handler or _no_handler)(event, self._context)
        except CredentialError as exc:
            self._paused_until = time.monotonic() + CREDENTIAL_PAUSE
            bound.error(
                "handler.credentials_rejected",
                api=exc.api,
                status=exc.status,
                error=exc.message,
                pause_seconds=CREDENTIAL_PAUSE,
            )
        except CrisyncError as exc:
            if exc.retriable and attempt < self._settings.max_attempts:
                await self._postpone(event, attempt, exc, bound)
            else:
                await self._fail(event, attempt, exc.info(), bound)
        except Exception as exc:  # noqa: BLE001 - a bug with one object must not stop the others
            bound.exception("handler.crashed")
            await self._fail(event, attempt, ErrorInfo("InternalError", None, repr(exc)), bound)
        else:
            await self._succeed(event, attempt, result)
            self._telemetry.outcome(result.action)
            bound.info(
                "object.replicated",
                action=result.action,
                pure_type=result.pure_type,
                pure_uuid=result.pure_uuid,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )

    async def _succeed(self, event: InboxEvent, attempt: int, result: HandlerResult) -> None:
        async with self._store.transaction() as conn:
            await record_result(conn, event, result)
            await self._add_outcome(
                conn,
                event,
                outcome_payload(
                    event,
                    action=result.action,
                    pure_type=result.pure_type,
                    pure_uuid=result.pure_uuid,
                    attempts=attempt,
                ),
            )

    async def _postpone(
        self,
        event: InboxEvent,
        attempt: int,
        exc: CrisyncError,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        delay = full_jitter(attempt, base=2.0, cap=300.0, floor=exc.retry_after)
        not_before = iso_utc(datetime.now(UTC) + timedelta(seconds=delay))
        async with self._store.transaction() as conn:
            await inbox.postpone(conn, event, attempts=attempt, not_before=not_before)
        bound.warning(
            "handler.retry_later", error=exc.message, status=exc.status, delay=round(delay, 2)
        )

    async def _fail(
        self,
        event: InboxEvent,
        attempt: int,
        error: ErrorInfo,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        async with self._store.transaction() as conn:
            await inbox.complete(conn, event, state="dead")
            await dead_letters.add(conn, event, error, attempt)
            known = await mapping.get(conn, event.source, event.kind, event.key)
            await self._add_outcome(
                conn,
                event,
                outcome_payload(
                    event,
                    action="failed",
                    pure_type=known.pure_type if known else None,
                    pure_uuid=known.pure_uuid if known else None,
                    attempts=attempt,
                    error=error,
                ),
            )
        self._telemetry.outcome("failed")
        bound.error(
            "object.failed", error_class=error.error_class, status=error.status, error=error.message
        )

    async def _add_outcome(
        self, conn: aiosqlite.Connection, event: InboxEvent, payload: str
    ) -> None:
        if self._settings.topic_prefix is None:
            return
        await outbox.add(conn, outcome_topic(self._settings.topic_prefix, event), payload)
        self._outbox_ready.set()

    async def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = time.monotonic()
        cutoff = iso_utc(datetime.now(UTC) - INBOX_RETENTION)
        async with self._store.transaction() as conn:
            removed = await inbox.prune(conn, cutoff)
        if removed:
            log.info("inbox.pruned", rows=removed)


async def record_result(
    conn: aiosqlite.Connection, event: InboxEvent, result: HandlerResult
) -> None:
    """The state a handled event leaves: event closed, mapping and create intent settled."""
    await inbox.complete(conn, event)
    if result.follow_ups:
        await inbox.add_events(conn, result.follow_ups, utc_now())
    if result.mapping is not None:
        await mapping.put(conn, result.mapping)
        await create_intents.remove(conn, event.source, event.kind, event.key)
    elif result.forget_mapping:
        await mapping.delete(conn, event.source, event.kind, event.key)
        await create_intents.remove(conn, event.source, event.kind, event.key)


async def _no_handler(event: InboxEvent, _context: HandlerContext) -> HandlerResult:
    raise CrisyncError(f"no handler for {event.source} {event.kind}", api="crisync")
