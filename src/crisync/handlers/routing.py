"""Which handler takes which change: derived from the mappings, never a hand-written list.

Every (source, kind) whose mapping names a target goes to that target's `handle`; a
source adds the handlers of its own (Elements' write-back) and the work a create of one
of its objects calls for. That every kind a source reads has a mapping is checked with
the configuration (`crisync check-config`), so no kind meets a missing handler at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from crisync.errors import PermanentError
from crisync.handlers.base import Handler, HandlerResult, RightsMissingError, StateCheck, Target
from crisync.handlers.throttle import Throttle
from crisync.mapping.rules import MappingsConfig
from crisync.state.inbox import ChangeEvent, InboxEvent

AfterCreate = Callable[[InboxEvent, str, str], tuple[ChangeEvent, ...]]


class Source(Protocol):
    """What routing asks of a source (`crisync.listener.base.Source`)."""

    @property
    def name(self) -> str: ...

    def routes(self) -> dict[tuple[str, str], Handler]: ...

    def after_create(
        self, event: InboxEvent, target_type: str, target_uuid: str
    ) -> tuple[ChangeEvent, ...]: ...


# What tells a source its object has content in the target now: made, taken over or found.
FIRST_CONTACT = frozenset({"created", "adopted", "linked"})


@dataclass(frozen=True)
class Routes:
    handlers: Mapping[tuple[str, str], Handler]
    # source → the follow-ups a target's create of one of its objects calls for
    after_create: Mapping[str, AfterCreate] = field(default_factory=dict)
    # (source, kind) → the API its handler writes to: a target, or the source itself for
    # a handler of its own (Elements' write-back); each has an outage circuit
    apis: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # target → its check of the state database, asked before its first write
    state_checks: Mapping[str, StateCheck] = field(default_factory=dict)
    # API → its quota and backfill window, for the targets that have them
    throttles: Mapping[str, Throttle] = field(default_factory=dict)

    def handler(self, event: InboxEvent) -> Handler:
        return self.handlers.get((event.source, event.kind)) or _unrouted

    def follow_ups(self, event: InboxEvent, result: HandlerResult) -> tuple[ChangeEvent, ...]:
        """What the result calls for: its own follow-ups, and the source's after a create."""
        after = self.after_create.get(event.source)
        if after is None or result.action not in FIRST_CONTACT or result.target_type is None:
            return result.follow_ups
        assert result.target_uuid is not None  # content found or created has a uuid
        return result.follow_ups + after(event, result.target_type, result.target_uuid)


def route(
    mappings: MappingsConfig, targets: Mapping[str, Target], sources: Sequence[Source]
) -> Routes:
    handlers: dict[tuple[str, str], Handler] = {}
    apis: dict[tuple[str, str], str] = {}
    for source_name, kind, rules in mappings.all():
        if rules.target in targets:
            handlers[(source_name, kind)] = targets[rules.target].handle
            apis[(source_name, kind)] = rules.target
    for source in sources:
        own = source.routes()
        handlers.update(own)
        apis.update(dict.fromkeys(own, source.name))
    after_create = {source.name: source.after_create for source in sources}
    state_checks = {name: partial(_first_write_check, target) for name, target in targets.items()}
    throttles = {
        name: target.throttle for name, target in targets.items() if target.throttle is not None
    }
    return Routes(handlers, after_create, apis, state_checks, throttles)


async def _first_write_check(target: Target) -> str | None:
    """Before a target's first write: its rights (RightsMissingError), then the state."""
    gap = await target.rights_gap()
    if gap is not None:
        raise RightsMissingError(gap)
    return await target.foreign_state()


async def _unrouted(event: InboxEvent) -> HandlerResult:
    # The configuration check keeps a read kind from arriving here; a kind no longer read
    # or mapped since its events were queued does.
    raise PermanentError(f"no mapping for {event.source} {event.kind}", api="crisync")
