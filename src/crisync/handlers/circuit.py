"""An outage is a state of the API, not a failure of each object: one circuit per API.

The rule, for the handlers' work on one API (a target such as Pure, or Elements for the
write-back):

* An *outage failure* is one that says nothing about the object: no answer at all
  (connection refused or reset), no answer in time, or 500, 502, 503, 504. A 409 (stale
  version, already locked) and a 429 (throttled, Retry-After) are answers about one object
  or one moment and stay with that object; so does every permanent failure.
* The circuit opens after OPEN_AFTER outage failures in a row with no answer of the API
  between them (a success, or a failure that is not an outage), from at least two objects.
  One object failing again and again with a server error may be that object's fault (a
  body the server chokes on); a refused connection never is, so when every failure of the
  streak is one, a single object opens it too.
* The failures of the streak are given back: their events keep the attempts they had. So
  is every outage failure while the circuit is open: the API's state, not the object's.
* While open, the dispatcher hands out no work for that API but one probe, after a delay
  drawn with full jitter that grows with each failed probe up to PROBE_CAP. The first
  answer of the API that is not an outage closes the circuit.

A refusal of crisync's credentials (401, 403) opens the circuit at once: it is the API's
state for every object. Its probe waits the target's `park_duration` (the one policy for
refused credentials), not the backoff of an outage. So does a refusal of the configuration
(`first_objects`: one permanent failure on nearly all of a route's first objects); its probe
is an object of that route, and the same failure again keeps the circuit open.

Only an object's own permanent failure, or its retriable failures while the API otherwise
answers, count toward the target's `max_attempts`; a 429 with Retry-After does not either
(throttling is the API's limit: the dispatcher postpones the object as asked).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from crisync.backoff import full_jitter
from crisync.credentials import refusal
from crisync.errors import CredentialError, CrisyncError, RetriableError, UnreachableError
from crisync.state.inbox import InboxEvent

# Outage failures in a row that open the circuit: more than the handlers a small
# configuration keeps busy, so one unlucky moment of a storm does not hold all work back.
OPEN_AFTER = 5
# Server answers that speak for the whole API: an internal error, a gateway's.
OUTAGE_STATUSES = frozenset({500, 502, 503, 504})
# Ceiling of the first probe's delay (seconds), doubled by each failed probe up to the cap:
# a long outage costs a probe a minute at most, a short one is noticed within seconds.
PROBE_BASE = 2.0
PROBE_CAP = 60.0


def outage_failure(exc: CrisyncError) -> bool:
    """Whether a failure says the API is out, or refuses crisync, rather than anything about
    the object."""
    if isinstance(exc, CredentialError):
        return True
    # A 409 and a 429 carry their status: answers, not outages.
    return isinstance(exc, RetriableError) and (exc.status is None or exc.status in OUTAGE_STATUSES)


@dataclass(frozen=True)
class StreakFailure:
    """One outage failure counted toward opening the circuit."""

    event: InboxEvent  # as claimed: its attempts are those it had before this failure
    unreachable: bool


@dataclass(frozen=True)
class Opened:
    """The failure that opened the circuit, and the earlier ones whose attempts go back."""

    reason: str
    given_back: tuple[InboxEvent, ...]


@dataclass(frozen=True)
class ProbeFailed:
    probes_failed: int
    next_probe_in: float  # seconds


@dataclass(frozen=True)
class Closed:
    open_for: float  # seconds
    probes_failed: int


@dataclass
class Circuit:
    """One API's circuit: which routes it holds back, whether it is open, when to probe."""

    api: str
    routes: frozenset[str]  # "source/kind" of the events handled through this API
    refusal_pause: float  # seconds between probes while the API refuses the credentials
    _streak: list[StreakFailure] = field(default_factory=list)
    opened_at: datetime | None = None  # wall clock, for people
    reason: str | None = None
    probes_failed: int = 0
    _opened_monotonic: float = 0.0
    _next_probe: float = 0.0  # time.monotonic() when the next probe may go
    probe_key: str | None = None  # the object key of the probe in flight
    # Opened by a refusal of the configuration: the route whose objects failed, and how
    # (first_objects.failure_signature); None otherwise.
    refused: tuple[str, str] | None = None
    # Whether its last failure was a refusal of crisync's credentials (401, 403).
    credentials_refused: bool = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def next_probe_at(self) -> datetime | None:
        """When the next probe may go, wall clock; None while closed."""
        if not self.is_open:
            return None
        return datetime.now(UTC) + timedelta(seconds=max(self.probe_wait(), 0.0))

    def probe_wait(self) -> float:
        """Seconds until a probe may go (zero or less: now)."""
        return self._next_probe - time.monotonic()

    def probe_due(self) -> bool:
        return self.is_open and self.probe_key is None and self.probe_wait() <= 0

    def probe_routes(self) -> frozenset[str]:
        """The routes a probe is taken from: the refused one, else any this API serves."""
        return self.routes if self.refused is None else frozenset({self.refused[0]})

    def probing(self, event: InboxEvent) -> None:
        self.probe_key = event.object_key

    def open_for(self) -> float:
        return time.monotonic() - self._opened_monotonic if self.is_open else 0.0

    def answered(self) -> Closed | None:
        """The API answered something other than an outage: the streak ends, the circuit
        closes if it was open (returned then)."""
        self._streak.clear()
        if not self.is_open:
            return None
        closed = Closed(self.open_for(), self.probes_failed)
        self.opened_at, self.reason, self.probe_key, self.refused = None, None, None, None
        self.probes_failed = 0
        self.credentials_refused = False
        return closed

    def refuse(self, reason: str, route: str, signature: str) -> Opened:
        """The API refuses what the configuration makes crisync send (see first_objects)."""
        self._streak.clear()
        self.refused = (route, signature)
        self._open(reason)
        self._next_probe = time.monotonic() + self.refusal_pause
        return Opened(reason, ())

    def failed(self, event: InboxEvent, exc: CrisyncError) -> Opened | ProbeFailed | bool:
        """An outage failure of `event`. False: it counts toward the object's attempts (the
        circuit stays closed). Opened: this one opened it. ProbeFailed: the probe found the
        API still out. True: the circuit is open; the event waits with its attempts."""
        if self.is_open:
            if event.object_key != self.probe_key:
                return True
            self.probe_key = None
            self.probes_failed += 1
            if self.refused is None:
                self.reason = self._reason(exc)
                self.credentials_refused = isinstance(exc, CredentialError)
            delay = self._schedule_probe(exc)
            return ProbeFailed(self.probes_failed, delay)
        self._streak.append(StreakFailure(event, isinstance(exc, UnreachableError)))
        if not isinstance(exc, CredentialError) and not self._streak_opens():
            return False
        # The earlier failures were counted as attempts; an event met twice goes back to
        # the attempts it had the first time.
        earliest: dict[int, InboxEvent] = {}
        for failure in self._streak[:-1]:
            earliest.setdefault(failure.event.id, failure.event)
        given_back = tuple(earliest.values())
        self._streak.clear()
        self._open(self._reason(exc))
        self.credentials_refused = isinstance(exc, CredentialError)
        self._schedule_probe(exc)
        return Opened(self._reason(exc), given_back)

    def _open(self, reason: str) -> None:
        self.opened_at = datetime.now(UTC)
        self._opened_monotonic = time.monotonic()
        self.reason = reason

    def _streak_opens(self) -> bool:
        if len(self._streak) < OPEN_AFTER:
            return False
        objects = {failure.event.object_key for failure in self._streak}
        return len(objects) >= 2 or all(failure.unreachable for failure in self._streak)

    @staticmethod
    def _reason(exc: CrisyncError) -> str:
        return refusal(exc) if isinstance(exc, CredentialError) else exc.info().message

    def _schedule_probe(self, exc: CrisyncError) -> float:
        if isinstance(exc, CredentialError) or self.refused is not None:
            delay = self.refusal_pause  # someone must change the key or content first
        else:
            delay = full_jitter(
                self.probes_failed + 1, base=PROBE_BASE, cap=PROBE_CAP, floor=exc.retry_after
            )
        self._next_probe = time.monotonic() + delay
        return delay


def circuits_for(apis: Iterable[tuple[str, str]], *, refusal_pause: float) -> dict[str, Circuit]:
    """A circuit per API, from ("source/kind", api) pairs of the routes."""
    routes: dict[str, set[str]] = {}
    for route, api in apis:
        routes.setdefault(api, set()).add(route)
    return {api: Circuit(api, frozenset(held), refusal_pause) for api, held in routes.items()}
