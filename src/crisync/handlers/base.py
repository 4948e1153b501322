"""What every handler receives and returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from crisync.config.mapping import MappingsConfig
from crisync.config.model import PureConfig, UnicatConfig
from crisync.handlers.pure_client import PureClient
from crisync.handlers.references import KeyedLocks
from crisync.listener.writeback import ElementsWriteback
from crisync.outcome import OutcomeAction
from crisync.state.inbox import ChangeEvent, InboxEvent
from crisync.state.mapping import MappingRow
from crisync.state.store import Store


@dataclass(frozen=True)
class HandlerContext:
    store: Store
    pure: PureClient
    pure_config: PureConfig
    mappings: MappingsConfig = field(default_factory=MappingsConfig)  # built-ins unless configured
    # One search-or-create per external person name at a time, across concurrent handlers.
    external_person_locks: KeyedLocks = field(default_factory=KeyedLocks)
    unicat: UnicatConfig | None = None  # its record mappings, when Unicat is configured
    elements_writeback: ElementsWriteback | None = None  # None: no write-back configured


@dataclass(frozen=True)
class HandlerResult:
    action: OutcomeAction
    pure_type: str | None
    pure_uuid: str | None
    mapping: MappingRow | None  # the mapping to store with the outcome; None leaves it as it is
    # Further work this result causes (e.g. writing the Pure uuid back into the source),
    # queued in the inbox in the same transaction.
    follow_ups: tuple[ChangeEvent, ...] = ()
    # The source object is gone and so is (or will be) its link to Pure: drop the mapping.
    forget_mapping: bool = False


Handler = Callable[[InboxEvent, HandlerContext], Awaitable[HandlerResult]]
