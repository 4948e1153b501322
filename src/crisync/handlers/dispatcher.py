"""The dispatcher: inbox events to handlers, one key at a time, several keys at once."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import aiosqlite
import structlog

from crisync import credentials
from crisync.backoff import full_jitter
from crisync.errors import CredentialError, CrisyncError, ErrorInfo
from crisync.handlers.base import FirstWriteRefusedError, ForeignStateError, HandlerResult
from crisync.handlers.circuit import (
    Circuit,
    Closed,
    Opened,
    ProbeFailed,
    circuits_for,
    outage_failure,
)
from crisync.handlers.first_objects import (
    FirstObjects,
    OwnFailures,
    Refused,
    Withheld,
    failure_signature,
)
from crisync.handlers.routing import Routes
from crisync.handlers.throttle import BackfillHold, backfill_work
from crisync.lifecycle import Lifecycle
from crisync.outcome import outcome_payload, outcome_topic
from crisync.publisher.api_status import api_payload, api_topic
from crisync.state import (
    api_circuits,
    api_quotas,
    create_intents,
    dead_letters,
    inbox,
    mapping,
    outbox,
)
from crisync.state.inbox import InboxEvent
from crisync.state.store import StateDiskFullError, Store, iso_utc, utc_now
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.handlers")

# Done events are remembered this long, to drop feed repeats (the lookback is shorter).
INBOX_RETENTION = timedelta(days=1)
PRUNE_EVERY = 3600.0
IDLE_WAKE = 5.0
# Keys claimed ahead, per worker: the queue is refilled when it runs low, not per event.
PREFETCH = 4
# Seconds between two records of the targets' quotas and the backfill hold in the state
# database (for `crisync status`, and for the next start to count what was sent).
THROTTLE_RECORD_EVERY = 10.0


@dataclass(frozen=True)
class Replicated:
    """A handled event whose result is still to be committed."""

    event: InboxEvent
    attempt: int
    result: HandlerResult
    duration_ms: float


@dataclass(frozen=True)
class DispatchSettings:
    workers: int  # handlers at once; each target's client bounds its requests in flight
    max_attempts: int
    park_duration: float  # seconds between tries after a target refused the credentials
    topic_prefix: str | None  # None: MQTT is off, no outcomes are kept
    # (source, kind) -> the kinds of that source its mapping refers to (MappingsConfig.referred)
    refers_to: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    # `crisync once`: seconds an API may stay out once the feeds are done before the
    # dispatcher stops waiting for it; None (the daemon): it waits as long as it takes
    give_up_after: float | None = None
    # Ask each target, before its first write, whether this state database is the one that
    # wrote its content (Target.foreign_state); False: `--allow-empty-state`
    check_state: bool = True


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
        routes: Routes,
        settings: DispatchSettings,
        *,
        life: Lifecycle,
        telemetry: Telemetry,
    ) -> None:
        self._telemetry = telemetry
        self._store = store
        self._routes = routes
        self._settings = settings
        self._life = life
        self._busy: dict[str, InboxEvent] = {}  # claimed, by object key
        self._last_prune = 0.0
        self._circuits = circuits_for(
            ((f"{source}/{kind}", api) for (source, kind), api in routes.apis.items()),
            refusal_pause=settings.park_duration,
        )
        for api in self._circuits:
            telemetry.api_state(api, None)
        # One failure at a time: a circuit's verdict and what it writes (an attempt counted,
        # attempts given back) reach the database in the order the circuit decided them.
        self._verdicts = asyncio.Lock()
        self._first = FirstObjects()
        # The targets still to ask whether they hold content this state does not know.
        self._unchecked = dict(routes.state_checks) if settings.check_state else {}
        self._checking = asyncio.Lock()
        self.gave_up: list[str] = []  # the APIs `once` stopped waiting for
        self._throttles = routes.throttles
        self._backfill_claims = backfill_claims(
            settings.workers, max((t.changes_share() for t in self._throttles.values()), default=0)
        )
        self._backfill_waits: BackfillHold | None = None  # why backfill waits, as last found
        self._last_throttle_record = -THROTTLE_RECORD_EVERY
        self.refused_configuration: list[str] = []  # of those, the ones refusing it

    async def run(self) -> None:
        """Until stopped, or, once the feeds are done, until nothing is pending."""
        queue: asyncio.Queue[InboxEvent | None] = asyncio.Queue()
        replicated: asyncio.Queue[Replicated | None] = asyncio.Queue()
        async with self._store.transaction() as conn:
            await self._forget_left_open(conn)
            await self._count_recorded_requests(conn)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._record(replicated), name="dispatcher-recorder")
            try:
                async with asyncio.TaskGroup() as workers:
                    for number in range(self._settings.workers):
                        workers.create_task(
                            self._work(queue, replicated), name=f"dispatcher-worker-{number}"
                        )
                    try:
                        await self._feed(queue)
                    finally:
                        for _ in range(self._settings.workers):
                            queue.put_nowait(None)
            finally:
                replicated.put_nowait(None)  # after the workers: their last results first
        await self._record_throttles(now=True)

    async def _forget_left_open(self, conn: aiosqlite.Connection) -> None:
        """A circuit starts closed (the API is tried): an outage or refusal a previous run
        recorded is over for status, systemd and the retained MQTT state alike."""
        prefix = self._settings.topic_prefix
        for left_open in await api_circuits.all_open(conn):
            circuit = self._circuits.get(left_open.api)
            if circuit is not None:
                await self._record_state(conn, circuit)
            elif prefix is not None:
                # No handler writes to it any more (e.g. the write-back switched off): its
                # retained state is removed, as an empty retained message does.
                await outbox.add(conn, api_topic(prefix, left_open.api), "", retain=True)
                self._store.wake_after_commit(self._life.outbox_ready)
        await api_circuits.clear(conn)

    async def _feed(self, queue: asyncio.Queue[InboxEvent | None]) -> None:
        while not self._life.stopping.is_set():
            self._telemetry.beat(self.loop_name)
            self._life.work_ready.clear()
            await self._record_throttles()
            if self._life.feeds_done.is_set() and await self._give_up_on_outages():
                return
            claimed = await self._claim()
            for event in claimed:
                queue.put_nowait(event)
            if claimed or self._busy:
                # Workers wake this loop as they finish; nothing else to ask the database.
                await self._wait_for_work(IDLE_WAKE)
            elif self._first.keys():
                # Nothing else to judge the withheld failures by: they are the objects' own.
                async with self._verdicts:
                    await self._dead_letters(self._first.settle())
            elif await self._drained():
                await self._store.give_back_free_pages()
                return
            else:
                await self._wait_for_work(await self._idle_timeout())

    async def _claim(self) -> list[InboxEvent]:
        """Refill the queue once it runs low, with up to PREFETCH keys' newest events."""
        if len(self._busy) > self._settings.workers:
            return []
        free = self._settings.workers * PREFETCH - len(self._busy)
        out = [circuit for circuit in self._circuits.values() if circuit.is_open]
        held = [route for circuit in out for route in circuit.routes] + self._quota_held()
        backfill_room = self._backfill_room()
        async with self._store.reading() as conn:
            events: list[InboxEvent] = []
            more = True  # whether more keys may be ready than the claims took
            # Backfill takes what room it has, oldest first with the changes among it; the
            # rest is for changes, however much backfill waits before them.
            if backfill_room > 0:
                more = await self._claim_into(events, conn, min(free, backfill_room), held)
            if backfill_room < free and more:
                await self._claim_into(events, conn, free - len(events), held, changes_only=True)
            for circuit in out:
                if circuit.probe_due():
                    events.extend(await self._claim_probe(conn, circuit))
        await self._prune_now_and_then()
        return events

    async def _claim_probe(self, conn: aiosqlite.Connection, circuit: Circuit) -> list[InboxEvent]:
        """One event of an API that is out, to find out whether it answers again."""
        probe = await inbox.claim_ready(
            conn, busy_keys=self._unclaimable(), now=utc_now(), limit=1, only=circuit.probe_routes()
        )
        for event in probe:
            circuit.probing(event)
            self._busy[event.object_key] = event
        return probe

    async def _claim_into(
        self,
        events: list[InboxEvent],
        conn: aiosqlite.Connection,
        limit: int,
        held: list[str],
        *,
        changes_only: bool = False,
    ) -> bool:
        """Claim up to `limit` keys' newest events into `events`; False when fewer were ready."""
        ready = await inbox.claim_ready(
            conn,
            busy_keys=self._unclaimable(),
            now=utc_now(),
            limit=limit,
            held=held,
            changes_only=changes_only,
        )
        taken = self._after_what_they_refer_to(ready)
        self._busy.update((event.object_key, event) for event in taken)
        events.extend(taken)
        return len(ready) == limit

    def _quota_held(self) -> list[str]:
        """The routes of the APIs whose hourly quota is spent: their work waits, untried."""
        return [
            route
            for api, throttle in self._throttles.items()
            if api in self._circuits and throttle.spent()
            for route in self._circuits[api].routes
        ]

    def _backfill_room(self) -> int:
        """How many more backfill keys may be claimed now."""
        waits = next(
            (why for t in self._throttles.values() if (why := t.backfill_waits()) is not None),
            None,
        )
        self._telemetry.backfill_waits = None if waits is None else waits.reason
        if waits != self._backfill_waits:
            self._backfill_waits = waits
            if waits is None:
                log.info("backfill.resumed")
            else:
                log.info("backfill.held", reason=waits.reason)
        if waits is not None:
            return 0
        if self._backfill_claims is None:
            return self._settings.workers * PREFETCH
        return self._backfill_claims - sum(event.backfill for event in self._busy.values())

    async def _count_recorded_requests(self, conn: aiosqlite.Connection) -> None:
        """What a previous run sent in the last hour counts against the quotas now."""
        for recorded in await api_quotas.all_quotas(conn):
            throttle = self._throttles.get(recorded.api)
            if throttle is not None and throttle.figures().limit is not None:
                throttle.seed(recorded.used, datetime.fromisoformat(recorded.recorded_at))
            else:  # its quota is no longer configured: status should not show it
                await api_quotas.remove(conn, recorded.api)

    async def _record_throttles(self, *, now: bool = False) -> None:
        """The quotas and the backfill hold into the state database, every few seconds."""
        if not now and time.monotonic() - self._last_throttle_record < THROTTLE_RECORD_EVERY:
            return
        if not self._throttles:
            return
        self._last_throttle_record = time.monotonic()
        recorded_at = utc_now()
        async with self._store.transaction() as conn:
            for api, throttle in self._throttles.items():
                figures = throttle.figures()
                if figures.limit is not None:
                    refills = figures.refills_at
                    await api_quotas.put(
                        conn,
                        api_quotas.RecordedQuota(
                            api,
                            figures.limit,
                            figures.used,
                            None if refills is None else iso_utc(refills),
                            recorded_at,
                        ),
                    )
            hold = self._backfill_waits
            await api_quotas.hold_backfill(conn, hold.reason if hold else None, recorded_at)

    def _unclaimable(self) -> set[str]:
        """Keys not to claim: those in hand, and those whose failure awaits its verdict."""
        return self._busy.keys() | self._first.keys()

    async def _give_up_on_outages(self) -> bool:
        """`once` only: stop when an API has been out for longer than it may wait, or refuses
        crisync's credentials or configuration."""
        limit = self._settings.give_up_after
        if limit is None:
            return False
        # Refused credentials or a refused configuration are not waited for: only a change
        # of the key, the configuration or what the target holds ends them, and none comes
        # during one run.
        given_up = [
            c
            for c in self._circuits.values()
            if c.is_open
            and (c.refused is not None or c.credentials_refused or c.open_for() > limit)
        ]
        if not given_up:
            return False
        async with self._store.reading() as conn:
            for circuit in given_up:
                waiting = await inbox.pending_count(conn, routes=circuit.routes)
                if circuit.refused is not None:
                    why = "refuses what the configuration makes crisync send"
                elif circuit.credentials_refused:
                    why = "refuses crisync's credentials"
                else:
                    why = f"stayed out for more than {limit:.0f} s"
                log.error(
                    "circuit.gave_up",
                    api=circuit.api,
                    open_for=round(circuit.open_for(), 1),
                    waiting=waiting,
                    reason=circuit.reason,
                    detail=f"{circuit.api} {why}; {waiting} events wait in the state database "
                    "with their attempts, for the next run",
                )
        self.gave_up = [circuit.api for circuit in given_up]
        self.refused_configuration = [c.api for c in given_up if c.refused is not None]
        return True

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
        """True when the feeds are done and no event waits, not even for a retry; backfill
        held back (outside its window) waits for a later run."""
        if not self._life.feeds_done.is_set():
            return False
        hold = self._backfill_waits
        only = False if hold is not None and hold.outside_window else None
        async with self._store.reading() as conn:
            return await inbox.pending_count(conn, backfill=only) == 0

    async def _idle_timeout(self) -> float:
        """How long an idle dispatcher may sleep: until the next retry or the end of a pause."""
        timeout = IDLE_WAKE
        async with self._store.reading() as conn:
            retry_at = await inbox.next_retry_at(conn)
        if retry_at is not None:
            due = (datetime.fromisoformat(retry_at) - datetime.now(UTC)).total_seconds()
            timeout = min(timeout, max(due, 0.01))
        for circuit in self._circuits.values():
            # A probe due now found no event ready: it goes with the next retry or new work.
            if circuit.is_open and circuit.probe_key is None and circuit.probe_wait() > 0:
                timeout = min(timeout, circuit.probe_wait())
        return timeout

    async def _wait_for_work(self, seconds: float) -> None:
        # Not wait_for: on Python 3.11 it swallows a cancellation that comes as the event is
        # set, which a failing worker does (its release wakes this loop): the loop would go on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._life.work_ready.wait()

    async def _work(
        self, queue: asyncio.Queue[InboxEvent | None], replicated: asyncio.Queue[Replicated | None]
    ) -> None:
        """Handle events; a success goes to the recorder, and the worker to its next event."""
        while (event := await queue.get()) is not None:
            done = None
            try:
                if not self._life.stopping.is_set() and not self._held(event):
                    done = await self._process(event)
            finally:
                if done is None:
                    self._release([event])
            if done is not None:
                replicated.put_nowait(done)

    def _held(self, event: InboxEvent) -> bool:
        """Whether the event's API went out, or spent its quota, or its backfill may no
        longer run, after it was claimed: it waits, untried."""
        api = self._routes.apis.get((event.source, event.kind), "")
        circuit = self._circuits.get(api)
        if circuit is not None and circuit.is_open and circuit.probe_key != event.object_key:
            return True
        throttle = self._throttles.get(api)
        return throttle is not None and (
            throttle.spent() or (event.backfill and throttle.backfill_waits() is not None)
        )

    def _release(self, events: list[InboxEvent]) -> None:
        """Their keys may be claimed again: what they did is committed."""
        for event in events:
            self._busy.pop(event.object_key, None)
        if len(self._busy) <= self._settings.workers:
            self._life.work_ready.set()

    async def _record(self, replicated: asyncio.Queue[Replicated | None]) -> None:
        """Commit successes, all that wait in one transaction, until the workers are done.

        A key stays busy until its result is committed, so its next event cannot overtake it.
        """
        finished = False
        while not finished:
            batch = [await replicated.get()]
            while not replicated.empty():
                batch.append(replicated.get_nowait())
            finished = None in batch
            done = [item for item in batch if item is not None]
            if done:
                await self._succeed(done)

    async def _process(self, event: InboxEvent) -> Replicated | None:
        """The handler's result, or None when the event failed or waits for a retry."""
        attempt = event.attempts + 1
        bound = log.bind(source=event.source, kind=event.kind, key=event.key, attempt=attempt)
        handler = self._routes.handler(event)
        api = self._routes.apis.get((event.source, event.kind))
        started = time.monotonic()
        backfill_work.set(event.backfill)  # this worker task's requests are paced as such
        try:
            await self._state_checked(api)
            result = await handler(event)
            follow_ups = self._routes.follow_ups(event, result)
        except CredentialError as exc:
            # The API's state, not the object's: its circuit holds its work back.
            credentials.refused(exc, pause=self._settings.park_duration, object=event.object_key)
            async with self._verdicts:
                if not await self._outage_holds(event, exc):
                    await self._fail(event, attempt, exc.info(), bound)  # an API without a circuit
        except CrisyncError as exc:
            async with self._verdicts:
                if await self._outage_holds(event, exc):
                    pass
                elif exc.status == 429 and exc.retry_after is not None:
                    # Throttled: the API's limit, not the object's failure. It waits as long
                    # as the API asked (capped by the client) and keeps its attempts.
                    await self._postpone(event, event.attempts, exc, bound)
                elif exc.retriable and attempt < self._settings.max_attempts:
                    await self._postpone(event, attempt, exc, bound)
                elif exc.retriable:
                    await self._fail(event, attempt, exc.info(), bound)
                else:
                    await self._judge_permanent(event, attempt, exc)
        except (StateDiskFullError, FirstWriteRefusedError):
            raise  # not the object's failure: the daemon stops, the event waits in the inbox
        except Exception as exc:  # noqa: BLE001 - a bug with one object must not stop the others
            bound.exception("handler.crashed")
            await self._fail(event, attempt, ErrorInfo("InternalError", None, repr(exc)), bound)
        else:
            async with self._verdicts:
                await self._answered(api)
                await self._dead_letters(self._first.succeeded(event))
            result = replace(result, follow_ups=follow_ups)
            return Replicated(event, attempt, result, (time.monotonic() - started) * 1000)
        return None

    async def _state_checked(self, api: str | None) -> None:
        """Before a target's first write: ForeignStateError when it holds content crisync
        wrote that this state database does not know (a fresh or lost database)."""
        if api is None or api not in self._unchecked:
            return
        async with self._checking:  # one check at a time; the others wait for its answer
            check = self._unchecked.get(api)
            if check is None:
                return
            refused = await check()
            if refused is not None:
                raise ForeignStateError(refused)
            del self._unchecked[api]

    async def _outage_holds(self, event: InboxEvent, exc: CrisyncError) -> bool:
        """Whether the failure is its API's outage: then the event waits with its attempts.

        So is, while the API refuses the configuration, the failure that made it refuse."""
        circuit = self._circuits.get(exc.api)
        if circuit is None:
            return False
        if not outage_failure(exc) and not self._refused_alike(circuit, exc):
            await self._answered(circuit.api)
            return False
        verdict = circuit.failed(event, exc)
        if isinstance(verdict, Opened):
            await self._opened(circuit, verdict)
        elif isinstance(verdict, ProbeFailed):
            await self._persist(circuit)
            log.warning(
                "circuit.probe_failed",
                api=circuit.api,
                key=event.object_key,
                error=exc.message,
                status=exc.status,
                probes_failed=verdict.probes_failed,
                open_for=round(circuit.open_for(), 1),
                next_probe_in=round(verdict.next_probe_in, 2),
            )
        return verdict is not False

    @staticmethod
    def _refused_alike(circuit: Circuit, exc: CrisyncError) -> bool:
        return circuit.refused is not None and circuit.refused[1] == failure_signature(exc.info())

    async def _judge_permanent(self, event: InboxEvent, attempt: int, exc: CrisyncError) -> None:
        """A permanent failure: withheld while the route's first objects are judged, then a
        dead letter, unless nearly all of them failed alike (the configuration's error)."""
        circuit = self._circuits.get(exc.api)
        verdict = (
            self._first.failed(event, attempt, exc)
            if circuit is not None and not isinstance(exc, CredentialError)
            else OwnFailures((Withheld(event, attempt, exc.info()),))
        )
        if isinstance(verdict, Refused):
            assert circuit is not None  # only an API with a circuit is judged so
            await self._opened(
                circuit, circuit.refuse(verdict.reason, verdict.route, verdict.signature)
            )
            self._life.work_ready.set()  # the withheld keys may be claimed again, as probes
        else:
            await self._dead_letters(verdict)

    async def _dead_letters(self, verdict: OwnFailures | None) -> None:
        for failure in () if verdict is None else verdict.failures:
            bound = log.bind(
                source=failure.event.source,
                kind=failure.event.kind,
                key=failure.event.key,
                attempt=failure.attempt,
            )
            await self._fail(failure.event, failure.attempt, failure.error, bound)

    async def _opened(self, circuit: Circuit, opened: Opened) -> None:
        async with self._store.transaction() as conn:
            await inbox.give_back_attempts(conn, *opened.given_back)
            waiting = await self._record_state(conn, circuit)
        assert circuit.opened_at is not None  # it opened
        since = circuit.opened_at.isoformat(timespec="seconds")
        self._telemetry.api_state(circuit.api, f"since {since}: {opened.reason}")
        log.error(
            "circuit.opened",
            api=circuit.api,
            reason=opened.reason,
            waiting=waiting,
            attempts_given_back=len(opened.given_back),
            next_probe_in=round(max(circuit.probe_wait(), 0.0), 2),
            detail=f"{circuit.api} is out: its work waits, keeping its attempts, "
            "and one probe at a time finds out when it answers again"
            if circuit.refused is None
            else f"{circuit.api} refuses what the configuration makes crisync send: its work "
            "waits, keeping its attempts; correct the configuration (`crisync check-config "
            "--online` names content it lacks) or the content, then restart",
        )

    async def _answered(self, api: str | None) -> None:
        """The API answered something other than an outage: its circuit closes if open."""
        circuit = None if api is None else self._circuits.get(api)
        if circuit is None:
            return
        refused = circuit.refused
        closed = circuit.answered()
        if closed is None:
            return
        if refused is not None:
            # Its probe was answered otherwise (the content exists now, or that object fails
            # its own way): the route's next objects are judged afresh, not dead-lettered.
            self._first.judge_again(refused[0])
        await self._closed(circuit, closed)

    async def _closed(self, circuit: Circuit, closed: Closed) -> None:
        async with self._store.transaction() as conn:
            waiting = await self._record_state(conn, circuit)
        self._telemetry.api_state(circuit.api, None)
        log.info(
            "circuit.closed",
            api=circuit.api,
            open_for=round(closed.open_for, 1),
            probes_failed=closed.probes_failed,
            waiting=waiting,
        )
        self._life.work_ready.set()

    async def _persist(self, circuit: Circuit) -> None:
        async with self._store.transaction() as conn:
            await self._record_state(conn, circuit)

    async def _record_state(self, conn: aiosqlite.Connection, circuit: Circuit) -> int:
        """The circuit's state into the state database and the outbox; how many events wait."""
        outage = None
        if circuit.opened_at is not None and circuit.reason is not None:
            next_probe = circuit.next_probe_at()
            outage = api_circuits.OpenCircuit(
                api=circuit.api,
                opened_at=iso_utc(circuit.opened_at),
                reason=circuit.reason,
                routes=sorted(circuit.routes),
                probes_failed=circuit.probes_failed,
                next_probe_at=None if next_probe is None else iso_utc(next_probe),
            )
            await api_circuits.put(conn, outage)
        else:
            await api_circuits.remove(conn, circuit.api)
        waiting = await inbox.pending_count(conn, routes=circuit.routes)
        prefix = self._settings.topic_prefix
        if prefix is not None:
            payload = api_payload(circuit.api, outage, waiting)
            await outbox.add(conn, api_topic(prefix, circuit.api), payload, retain=True)
            self._store.wake_after_commit(self._life.outbox_ready)
        return waiting

    async def _succeed(self, done: list[Replicated]) -> None:
        async with self._store.transaction() as conn:
            await record_results(conn, [(item.event, item.result) for item in done])
            await self._add_outcomes(
                conn,
                [
                    (
                        item.event,
                        outcome_payload(
                            item.event,
                            action=item.result.action,
                            target_type=item.result.target_type,
                            target_uuid=item.result.target_uuid,
                            attempts=item.attempt,
                            note=item.result.note,
                        ),
                    )
                    for item in done
                ],
            )
        for item in done:
            self._telemetry.outcome(item.result.action)
            log.info(
                "object.replicated",
                source=item.event.source,
                kind=item.event.kind,
                key=item.event.key,
                attempt=item.attempt,
                action=item.result.action,
                target_type=item.result.target_type,
                target_uuid=item.result.target_uuid,
                duration_ms=round(item.duration_ms, 1),
                **({"note": item.result.note} if item.result.note else {}),
            )
        self._release([item.event for item in done])

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
            await self._add_outcomes(
                conn,
                [
                    (
                        event,
                        outcome_payload(
                            event,
                            action="failed",
                            target_type=known.target_type if known else None,
                            target_uuid=known.target_uuid if known else None,
                            attempts=attempt,
                            error=error,
                        ),
                    )
                ],
            )
        self._telemetry.outcome("failed")
        bound.error(
            "object.failed", error_class=error.error_class, status=error.status, error=error.message
        )

    async def _add_outcomes(
        self, conn: aiosqlite.Connection, outcomes: Sequence[tuple[InboxEvent, str]]
    ) -> None:
        prefix = self._settings.topic_prefix
        if prefix is None:
            return
        await outbox.add_all(
            conn, [(outcome_topic(prefix, event), payload) for event, payload in outcomes]
        )
        self._store.wake_after_commit(self._life.outbox_ready)

    async def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = time.monotonic()
        async with self._store.transaction() as conn:
            removed = await inbox.prune(conn, datetime.now(UTC) - INBOX_RETENTION)
        await self._store.give_back_free_pages()
        if removed:
            log.info("inbox.pruned", rows=removed)


async def record_results(
    conn: aiosqlite.Connection, handled: Sequence[tuple[InboxEvent, HandlerResult]]
) -> None:
    """The state handled events leave: events closed, mappings and create intents settled.

    A statement per table for all of them, not per event: one round trip each.
    """
    await inbox.complete(conn, *(event for event, _ in handled))
    follow_ups = [follow_up for _, result in handled for follow_up in result.follow_ups]
    if follow_ups:
        await inbox.add_events(conn, follow_ups, utc_now())
    await mapping.put(conn, *(result.mapping for _, result in handled if result.mapping))
    for event, result in handled:
        if result.mapping is None and result.forget_mapping:
            await mapping.delete(conn, event.source, event.kind, event.key)
    await create_intents.remove(
        conn,
        *(
            (event.source, event.kind, event.key)
            for event, result in handled
            if result.mapping is not None or result.forget_mapping
        ),
    )


def backfill_claims(workers: int, changes_share: float) -> int | None:
    """Backfill keys claimed at most at once, so that a share of the handlers stays free for
    ordinary changes however long backfill's requests wait; None: no limit."""
    if changes_share <= 0:
        return None
    return max(1, workers - math.ceil(workers * changes_share))
