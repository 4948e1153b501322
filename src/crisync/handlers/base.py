"""The Target contract: what a handler of changes gives back, and what a target does.

A target is an outside system crisync replicates into (Pure). It lives in a folder of its
own below ``handlers/``: its configuration section, its client and error handling, its
mapping of source objects into its content, its reconcile, its simulator. The dispatcher
routes every (source, kind) whose mapping names the target to its `handle`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from crisync.handlers.throttle import Throttle
from crisync.outcome import OutcomeAction
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.mapping import MappingRow


@dataclass(frozen=True)
class HandlerResult:
    action: OutcomeAction
    target_type: str | None  # the content type in the target, when there is content
    target_uuid: str | None
    mapping: MappingRow | None  # the mapping to store with the outcome; None leaves it as it is
    # Further work this result causes (e.g. writing the target's uuid back into the source),
    # queued in the inbox in the same transaction.
    follow_ups: tuple[ChangeEvent, ...] = ()
    # The source object is gone and so is (or will be) its link to the target: drop the mapping.
    forget_mapping: bool = False
    # What a person should know about it (the match rule that found the content, ...).
    note: str | None = None


Handler = Callable[[InboxEvent], Awaitable[HandlerResult]]
# A target's answer to "does this state database know the content crisync wrote into you?":
# None when it does (or there is none), else why starting on it would duplicate that content.
StateCheck = Callable[[], Awaitable[str | None]]


class FirstWriteRefusedError(Exception):
    """A target or a source refuses this run before its first write: nothing written, exit 78."""


class RightsMissingError(FirstWriteRefusedError):
    """The target's credentials lack rights the mappings need (its access definition)."""


class SourceRefusedError(FirstWriteRefusedError):
    """A source's API does not allow or hold what the configuration asks of it (a category
    the account may not read, a write-back into a field no record type has)."""


class ForeignStateError(FirstWriteRefusedError):
    """A target holds content crisync wrote that the state database does not know: a new or
    lost database, which would create all of it again. `crisync reconcile` rebuilds it."""


@dataclass(frozen=True)
class PlannedContent:
    """What a plan would do to one piece of content, without what the target manages itself."""

    before: dict[str, Any] | None  # None: it does not exist yet
    after: dict[str, Any] | None  # None: it would be deleted
    writes: tuple[str, ...] = ()  # the writes, in order: create, update, lock, unlock, delete

    def changes(self) -> dict[str, dict[str, Any]]:
        """The top-level properties that change: {name: {"target": now, "crisync": then}}."""
        before, after = self.before or {}, self.after or {}
        return {
            name: {"target": before.get(name), "crisync": after.get(name)}
            for name in sorted(before.keys() | after.keys())
            if before.get(name) != after.get(name)
        }


class ReconcileReport(Protocol):
    @property
    def consistent(self) -> bool:
        """Whether the mapping and the target agree."""

    def render(self) -> str:
        """The report for a person, one line per finding."""


class Target(ABC):
    """An outside system crisync replicates into."""

    # Its configuration section, and what mappings name it by (``<name>_type = "..."``).
    name: ClassVar[str]

    @property
    @abstractmethod
    def workers(self) -> int:
        """Handlers the dispatcher keeps busy for this target at once."""

    @property
    @abstractmethod
    def max_attempts(self) -> int:
        """Retriable failures of one event before it becomes a dead letter."""

    @property
    @abstractmethod
    def park_duration(self) -> float:
        """Seconds between tries after it refused the credentials (its circuit holds its work)."""

    @property
    def throttle(self) -> Throttle | None:
        """Its quota and backfill window, for the dispatcher; None when it has none."""
        return None

    @abstractmethod
    async def handle(self, event: InboxEvent) -> HandlerResult:
        """Create, take over or update the object's content, or apply its deletion."""

    def planned(self, target_type: str, target_uuid: str) -> PlannedContent | None:
        """Opened for a plan: the content as the target holds it and as its writes would
        leave it; None when nothing would be written to it (or not opened for a plan)."""
        return None

    async def rights_gap(self) -> str | None:
        """What the credentials may not do that the mappings need, in one line, or None.
        Asked with `foreign_state`, before the first write of a run on a new state database."""
        return None

    @abstractmethod
    async def foreign_state(self) -> str | None:
        """Why replicating on this state database would duplicate content the target holds
        (a refusal, said in one line), or None. Asked once, before the target's first write;
        cheap when the state database already maps content of the target."""

    @abstractmethod
    async def reconcile(self, *, apply: bool) -> ReconcileReport:
        """Check the mapping against what the target holds; with `apply`, rebuild it."""
