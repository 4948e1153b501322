"""A permanent failure that hits nearly every one of a route's first objects is the
configuration's, not theirs.

The example configuration's placeholder managing organisation makes Pure answer
"400 no Organization with uuid 00000000-…" to every research output: dead-lettering the
backlog one object at a time would bury one configuration error under hundreds of dead
letters. So the first objects of each route ("source/kind") since the daemon started are
judged together:

* A permanent failure of one of them is withheld instead of becoming a dead letter: the
  event stays pending with the attempts it had, and is not claimed again meanwhile.
* When REFUSE_AT of them failed alike (same class, status and message, an object's own
  uuid in a request path left out) while at most SPARE other objects of the route were
  done otherwise, it is the configuration's error: the dispatcher opens the API's circuit
  as refused with that message, and the withheld events wait there with their attempts.
* When more than SPARE others were done otherwise first, the failures are the objects' own:
  the withheld events become dead letters, and so does every later permanent failure of
  the route, at once. The same holds for whatever is withheld when the dispatcher runs out
  of other work (a small site's few failures are not held back for ever).

Refused credentials are not judged here: they open the circuit by themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from crisync.errors import REFUSED_CONFIGURATION, CrisyncError, ErrorInfo
from crisync.state.inbox import InboxEvent

# Objects of a route failing alike that make it the configuration's error: more than a
# feed page's chance cluster of bad records, few enough to stop before the backlog burns.
REFUSE_AT = 10
# Objects of the route done otherwise (replicated, or failed another way) that still leave
# the failures "nearly all": a record or two that needs no such content.
SPARE = 2

# A uuid right after a content type in a request path is the object's own (an update).
_PATH_UUID = re.compile(r"(/[\w-]+/)[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def failure_signature(error: ErrorInfo) -> str:
    """What failures alike share: the class, the status, the message without the object."""
    message = _PATH_UUID.sub(r"\1…", error.message)
    return f"{error.error_class} {error.status or ''} {message}"


def route_of(event: InboxEvent) -> str:
    return f"{event.source}/{event.kind}"


@dataclass(frozen=True)
class Withheld:
    """A permanent failure of one of a route's first objects, waiting for the verdict."""

    event: InboxEvent  # as claimed: pending still, with the attempts it had
    attempt: int
    error: ErrorInfo


@dataclass(frozen=True)
class Refused:
    """The configuration's error: the route's first objects failed alike."""

    route: str
    signature: str
    reason: str
    withheld: tuple[Withheld, ...]  # their events wait in the circuit with their attempts


@dataclass(frozen=True)
class OwnFailures:
    """The failures are the objects' own: these become dead letters now."""

    failures: tuple[Withheld, ...]


@dataclass
class _Window:
    """One route's first objects while they are judged together."""

    alike: dict[str, list[Withheld]] = field(default_factory=dict)  # signature → failures
    replicated: int = 0

    def withheld(self) -> tuple[Withheld, ...]:
        return tuple(failure for failures in self.alike.values() for failure in failures)

    def spent(self) -> bool:
        """Whether no failure can be nearly all of the first objects any more."""
        most_alike = max(map(len, self.alike.values()), default=0)
        return self.replicated + len(self.withheld()) - most_alike > SPARE


@dataclass
class FirstObjects:
    """The judges of every route's first objects, for one dispatcher's life."""

    _open: dict[str, _Window] = field(default_factory=dict)  # route → its window, while open
    _judged: set[str] = field(default_factory=set)  # routes whose window closed

    def keys(self) -> set[str]:
        """The object keys withheld: not to be claimed until the verdict."""
        return {
            failure.event.object_key
            for window in self._open.values()
            for failure in window.withheld()
        }

    def succeeded(self, event: InboxEvent) -> OwnFailures | None:
        """An object of the route was replicated; the failures withheld when that closed
        its window."""
        window = self._window(event)
        if window is None:
            return None
        window.replicated += 1
        return self._close_if_spent(route_of(event))

    def failed(
        self, event: InboxEvent, attempt: int, exc: CrisyncError
    ) -> Refused | OwnFailures | None:
        """A permanent failure of an object. None: it is withheld (it waits, untried);
        Refused: the configuration's error; OwnFailures: dead letters to make, this one
        among them."""
        window = self._window(event)
        failure = Withheld(event, attempt, exc.info())
        if window is None:
            return OwnFailures((failure,))
        route, signature = route_of(event), failure_signature(failure.error)
        alike = window.alike.setdefault(signature, [])
        alike.append(failure)
        if len(alike) < REFUSE_AT:
            return self._close_if_spent(route)
        del self._open[route]
        self._judged.add(route)
        done = window.replicated + len(window.withheld())
        reason = (
            f"{REFUSED_CONFIGURATION}: {len(alike)} of the first {done} {route} objects "
            f"failed alike: {failure.error.message}"
        )
        return Refused(route, signature, reason, window.withheld())

    def judge_again(self, route: str) -> None:
        """The route's next objects are judged together again (its refusal ended)."""
        self._judged.discard(route)

    def settle(self) -> OwnFailures:
        """No other work is left to judge them by: every withheld failure is its object's."""
        withheld = tuple(f for window in self._open.values() for f in window.withheld())
        self._judged.update(self._open)
        self._open.clear()
        return OwnFailures(withheld)

    def _window(self, event: InboxEvent) -> _Window | None:
        route = route_of(event)
        if route in self._judged:
            return None
        return self._open.setdefault(route, _Window())

    def _close_if_spent(self, route: str) -> OwnFailures | None:
        window = self._open[route]
        if not window.spent():
            return None
        del self._open[route]
        self._judged.add(route)
        return OwnFailures(window.withheld())
