"""What the Pure target's handlers share: the state, the client, the configuration, the rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.match import ContentIndex
from crisync.handlers.pure.references import ExternalPersonIndex, KeyedLocks, RecentNames
from crisync.mapping.rules import MappingsConfig
from crisync.state.store import Store


@dataclass(frozen=True)
class PureContext:
    store: Store
    pure: PureClient
    pure_config: PureConfig
    mappings: MappingsConfig = field(default_factory=MappingsConfig)  # built-ins unless configured
    # One search-or-create per external person name at a time, across concurrent handlers.
    external_person_locks: KeyedLocks = field(default_factory=KeyedLocks)
    external_person_uuids: RecentNames = field(default_factory=RecentNames)
    # Whole types scanned for match values too common to search for, shared by the handlers.
    content_index: ContentIndex = field(default_factory=ContentIndex)
    # External persons scanned for names too common to search for, shared by the handlers.
    external_person_index: ExternalPersonIndex = field(default_factory=ExternalPersonIndex)
