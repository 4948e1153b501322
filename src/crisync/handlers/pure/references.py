"""References between objects, resolved through the mapping table and, for external persons, Pure.

Content crisync replicated is found in the mapping table without asking Pure. An external
person is created once per identity (`ExternalIdentity`: an author identifier such as an
ORCID iD or a Scopus author id, else a name in a context, else a name): crisync remembers
it (state/external_persons, keyed by the identity's key), and before creating one it
searches Pure, so a lost state database or a person an editor created already is reused
instead of duplicated. Reuse needs an exact match: crisync's own PrimaryId for the
identity, or the same identifier of the same scheme among the person's identifiers, or,
for a person known by name alone, the same normalised name.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from crisync.handlers.pure.client import PureClient, replaying
from crisync.handlers.pure.compact_index import CompactIndex
from crisync.handlers.pure.mapping import (
    ContentRef,
    ExternalIdentity,
    MatchProbe,
    ReplicatedPerson,
    author_id_key,
    name_key_of,
    primary_identifier,
)
from crisync.handlers.pure.match import SCAN_PAGE, AmbiguousMatchError, ContentIndex, stale
from crisync.handlers.pure.types import PURE_TYPES
from crisync.mapping.compare import PERSON_ID_SCHEMES, normalised
from crisync.state import external_persons, inbox, mapping
from crisync.state.store import Store

EXTERNAL_PERSONS = "external-persons"
EXTERNAL_PERSON_SYSTEM_NAME = PURE_TYPES[EXTERNAL_PERSONS].system_name
EXTERNAL_PERSON_ID_SOURCE = PURE_TYPES[EXTERNAL_PERSONS].id_source
# Search hits read first for an external person of a name, then in the contract's largest pages.
NAME_SEARCH_SIZE = 50
NAME_SEARCH_MORE = 1000


def external_person_primary_id(identity_key: str) -> str:
    return f"crisync:external-person:{identity_key}"


class KeyedLocks:
    """One asyncio lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class RecentNames:
    """The external persons' uuids by name key last asked for, up to a bound.

    Publications name the same few external authors again and again: the uuid remembered
    spares a state read per author. A name's uuid never changes once stored (it is written
    only when none is known), so what is remembered stays true.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._uuids: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        uuid = self._uuids.get(key)
        if uuid is not None:
            self._uuids.move_to_end(key)
        return uuid

    def put(self, key: str, uuid: str) -> None:
        self._uuids[key] = uuid
        self._uuids.move_to_end(key)
        if len(self._uuids) > self._size:
            self._uuids.popitem(last=False)


@dataclass(frozen=True)
class _PeopleScan:
    made_at: float  # time.monotonic()
    ours: CompactIndex  # crisync's PrimaryId value → uuid
    by_identifier: CompactIndex  # author identifier (author_id_key) → uuids
    by_name: CompactIndex  # name key → uuids of persons crisync did not make


class ExternalPersonIndex:
    """A scan of Pure's external persons, for names too common to search for.

    A new identity is looked for by a name search, whose hits rank namesakes first. When the
    namesakes fill its first page (a common name, or crisync's own namesakes, one per author
    identifier), reading on through all of them for every new identity grows with the
    content: the scan answers instead, made again every INDEX_MAX_AGE. An identity whose
    create failed in this process (its answer may have been lost) is never answered from a
    scan: its search reads on, so that its own person is found and not made twice.
    """

    def __init__(self) -> None:
        self._scan: _PeopleScan | None = None
        self._scanning = asyncio.Lock()
        self._uncertain: set[str] = set()

    def answers(self, identity_key: str) -> bool:
        """Whether the scan answers for this identity, without a search first."""
        return self._scan is not None and not self.uncertain(identity_key)

    def create_failed(self, identity_key: str) -> None:
        """A create for this identity failed: it may have reached Pure all the same."""
        self._uncertain.add(identity_key)

    def uncertain(self, identity_key: str) -> bool:
        """Whether a create for this identity failed in this process."""
        return identity_key in self._uncertain

    async def find(self, pure: PureClient, identity: ExternalIdentity) -> str | None:
        scan = self._scan
        # As ContentIndex.uuids: only the first scan is waited for, a stale one answers
        # while the next is made.
        if scan is None or (stale(scan.made_at) and not self._scanning.locked()):
            async with self._scanning:
                scan = self._scan
                if scan is None or stale(scan.made_at):
                    scan = self._scan = await _scan_people(pure)
        ours = scan.ours.get(external_person_primary_id(identity.key))
        if ours:
            return ours[0]
        if identity.identifier is not None:
            return next(iter(scan.by_identifier.get(identity.key)), None)
        if identity.context is not None:
            return None
        return next(iter(scan.by_name.get(identity.name_key)), None)


async def _scan_people(pure: PureClient) -> _PeopleScan:
    ours, by_identifier, by_name = CompactIndex(), CompactIndex(), CompactIndex()
    own_prefix = external_person_primary_id("")
    offset = 0
    while True:
        page = await pure.list_page(
            EXTERNAL_PERSONS, offset=offset, size=SCAN_PAGE, keep=frozenset({"identifiers", "name"})
        )
        for item in page.items:
            uuid = str(item["uuid"])
            values = [str(value) for value in _identifier_values(item) if value is not None]
            for value in values:
                if value.startswith(own_prefix):
                    ours.add(value, uuid)
            for held in author_identifiers(item):
                by_identifier.add(held, uuid)
            if not any(value.startswith(own_prefix) for value in values):
                by_name.add(name_key_of(item.get("name") or {}), uuid)
        if not page.more_after(offset):
            return _PeopleScan(time.monotonic(), ours, by_identifier, by_name)
        offset += len(page.items)


class PureReferences:
    """The engine's References: the mapping table, and Pure for external persons."""

    def __init__(
        self,
        store: Store,
        pure: PureClient,
        *,
        creating: KeyedLocks,
        known: RecentNames,
        index: ContentIndex,
        people: ExternalPersonIndex,
    ) -> None:
        self._store = store
        self._pure = pure
        self._creating = creating
        self._known = known
        self._index = index
        self._people = people

    async def content(self, source: str, kind: str, key: str) -> ContentRef | None:
        row = await mapping.get(self._store.lookups, source, kind, key)
        if row is None:
            return None
        return ContentRef(PURE_TYPES[row.target_type].system_name, row.target_uuid)

    async def persons(self, source: str, kind: str, match_key: str) -> list[ContentRef]:
        rows = await mapping.matching(self._store.lookups, source, kind, match_key)
        return [
            ContentRef(PURE_TYPES[row.target_type].system_name, row.target_uuid) for row in rows
        ]

    async def find(
        self,
        content_type: str,
        probes: Iterable[MatchProbe],
        *,
        create: Mapping[str, Any] | None = None,
    ) -> ContentRef | None:
        probes = list(probes)
        found = await self._found(content_type, probes)
        if found is not None or create is None or not probes:
            return found
        first = probes[0]
        # One create per value at a time: a concurrent handler finds what this one made.
        async with self._creating.hold(f"{content_type} {first.describe()}"):
            found = await self._found(content_type, probes)
            if found is None:
                found = await self._create_referred(content_type, first, create)
        return found

    async def _create_referred(
        self, content_type: str, probe: MatchProbe, body: Mapping[str, Any]
    ) -> ContentRef:
        """Synchronised content of crisync's: its PrimaryId, locked; remembered as found."""
        kind = PURE_TYPES[content_type]
        identifier = primary_identifier(kind.id_source, f"crisync:{content_type}:{probe.value}")
        created = await self._pure.create(content_type, {**body, "identifiers": [identifier]})
        uuid = str(created["uuid"])
        await self._pure.lock(content_type, uuid)
        self._index.remember(content_type, probe, [uuid])
        return ContentRef(kind.system_name, uuid)

    async def _found(self, content_type: str, probes: list[MatchProbe]) -> ContentRef | None:
        for probe in probes:
            uuids = await self._index.referred(self._pure, content_type, probe)
            if len(uuids) > 1:
                raise AmbiguousMatchError(
                    f"{len(uuids)} Pure {content_type} have {probe.describe()} "
                    f"({', '.join(uuids)}); crisync does not guess: merge them in Pure",
                    uuids,
                )
            if uuids:
                return ContentRef(PURE_TYPES[content_type].system_name, uuids[0])
        return None

    async def related_persons(
        self, source: str, kind: str, keys: list[str]
    ) -> dict[str, ReplicatedPerson]:
        if not keys:
            return {}
        rows = await mapping.get_many(self._store.lookups, source, kind, keys)
        return {
            key: ReplicatedPerson(
                ContentRef(PURE_TYPES[row.target_type].system_name, row.target_uuid), row.match_key
            )
            for key, row in rows.items()
        }

    async def still_to_replicate(self, source: str, kind: str, keys: list[str]) -> set[str]:
        return await inbox.waiting_keys(self._store.lookups, source, kind, keys)

    async def external_person(
        self, name: Mapping[str, str], identity: ExternalIdentity
    ) -> ContentRef:
        key = identity.key
        uuid = await self._known_external(key)
        if uuid is None:
            # One lookup and create per identity at a time, so concurrent objects share one.
            async with self._creating.hold(key):
                # A handler that held the lock before found or made it, and remembered it.
                uuid = self._known.get(key)
                if uuid is None:
                    uuid = await replaying(
                        partial(self._find_or_create_external, identity, name),
                        f"find or create external person {key}",
                    )
                    await external_persons.remember(self._store, key, uuid)
                    self._known.put(key, uuid)
        return ContentRef(EXTERNAL_PERSON_SYSTEM_NAME, uuid)

    async def _known_external(self, key: str) -> str | None:
        uuid = self._known.get(key)
        if uuid is None:
            uuid = await external_persons.get(self._store.lookups, key)
            if uuid is not None:
                self._known.put(key, uuid)
        return uuid

    async def _find_or_create_external(
        self, identity: ExternalIdentity, name: Mapping[str, str]
    ) -> str:
        """Safe to replay: a create whose answer was lost is found by the search first."""
        found = await self._find_external(identity, name)
        if found is not None:
            return found
        try:
            return await self._create_external(identity.key, name)
        except BaseException:
            self._people.create_failed(identity.key)
            raise

    async def _find_external(
        self, identity: ExternalIdentity, name: Mapping[str, str]
    ) -> str | None:
        """The external person of this identity in Pure, matched exactly; crisync's own first.

        Searched for by name: Pure's search takes no identifier. A name is evidence enough
        only for a person known by name alone; an author identifier or a context must match
        exactly.
        """
        if not self._people.answers(identity.key):
            hits = await self._name_hits(identity, name)
            if hits is not None:
                return _chosen(identity, hits)
        return await self._people.find(self._pure, identity)

    async def _name_hits(
        self, identity: ExternalIdentity, name: Mapping[str, str]
    ) -> list[dict[str, Any]] | None:
        """A name search's hits, read until crisync's own or past the namesakes; None for a
        name so common that its namesakes fill the first page: the scan answers for it."""
        text = " ".join(part for part in (name.get("firstName"), name.get("lastName")) if part)
        ours = external_person_primary_id(identity.key)
        words = _words(text)
        items: list[dict[str, Any]] = []
        offset, size = 0, NAME_SEARCH_SIZE
        while True:
            page = await self._pure.search(EXTERNAL_PERSONS, text, offset=offset, size=size)
            items.extend(page.items)
            if any(ours in _identifier_values(item) for item in page.items):
                return items
            # Namesakes rank before any hit that lacks one of the name's words. crisync's own
            # may rank past the first page among many (one per identifier or context): an identity
            # whose create failed reads on while a page holds nothing but namesakes.
            full = all(words <= _words(_name_text(item)) for item in page.items)
            if not full or not page.more_after(offset):
                return items
            if offset == 0 and not self._people.uncertain(identity.key):
                return None
            offset, size = offset + len(page.items), NAME_SEARCH_MORE

    async def _create_external(self, key: str, name: Mapping[str, str]) -> str:
        body = {
            "name": dict(name),
            "identifiers": [
                primary_identifier(EXTERNAL_PERSON_ID_SOURCE, external_person_primary_id(key))
            ],
        }
        created = await self._pure.create(EXTERNAL_PERSONS, body)
        return str(created["uuid"])


def _chosen(identity: ExternalIdentity, hits: list[dict[str, Any]]) -> str | None:
    """The hit that is this identity's person: crisync's own, else one with its author
    identifier, else (for a name alone) a namesake crisync does not know by another identity."""
    ours = external_person_primary_id(identity.key)
    for item in hits:
        if ours in _identifier_values(item):
            return str(item["uuid"])
    if identity.identifier is not None:
        for item in hits:
            if identity.key in author_identifiers(item):
                return str(item["uuid"])
        return None
    if identity.context is not None:
        return None
    namesakes = [
        item
        for item in hits
        if name_key_of(item.get("name") or {}) == identity.name_key
        and not any(
            str(value).startswith(external_person_primary_id(""))
            for value in _identifier_values(item)
        )
    ]
    return str(namesakes[0]["uuid"]) if namesakes else None


def _words(text: str) -> set[str]:
    """A text's words, as a full-text search reads them."""
    return set(re.findall(r"\w+", text.casefold()))


def _name_text(item: Mapping[str, Any]) -> str:
    name = item.get("name") or {}
    return " ".join(str(part) for part in name.values() if isinstance(part, str))


def author_identifiers(item: Mapping[str, Any]) -> set[str]:
    """The author identifiers (author_id_key) an external person in Pure carries: a value of
    an ORCID iD's form anywhere, other schemes' in ClassifiedIds of their classifications.
    crisync's own PrimaryIds are skipped: they hold its identity key, an ORCID iD's digits
    among them, and are crisync's record of the person, not an identifier it carries."""
    held = set()
    for identifier in item.get("identifiers") or []:
        uri = str((identifier.get("type") or {}).get("uri") or "")
        value = identifier.get("value") or identifier.get("id")
        if str(value).startswith(external_person_primary_id("")):
            continue
        for scheme, rules in PERSON_ID_SCHEMES.items():
            if rules.classified is None or uri.rsplit("/", 1)[-1] in rules.classified:
                found = normalised(rules.comparison, value)
                if found is not None:
                    held.add(author_id_key(scheme, found))
    return held


def _identifier_values(item: Mapping[str, Any]) -> list[Any]:
    """The values of an object's identifiers: a PrimaryId's value, a ClassifiedId's id."""
    return [i.get("value") or i.get("id") for i in item.get("identifiers") or []]
