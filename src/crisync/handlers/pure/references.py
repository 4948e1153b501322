"""References between objects, resolved through the mapping table and, for external persons, Pure.

Content crisync replicated is found in the mapping table without asking Pure. An external
person is created once per name: crisync remembers it (state/external_persons), and before
creating one it searches Pure for that name, so a lost state database or a person an
editor created already is reused instead of duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

from crisync.handlers.pure.client import PureClient, replaying
from crisync.handlers.pure.mapping import ContentRef, primary_identifier
from crisync.handlers.pure.types import PURE_TYPES
from crisync.mapping.expressions import normalise_key
from crisync.state import external_persons, mapping
from crisync.state.store import Store

EXTERNAL_PERSONS = "external-persons"
EXTERNAL_PERSON_SYSTEM_NAME = PURE_TYPES[EXTERNAL_PERSONS].system_name
EXTERNAL_PERSON_ID_SOURCE = PURE_TYPES[EXTERNAL_PERSONS].id_source
# Search hits looked at for an external person of a name: namesakes beyond are not reused.
NAME_SEARCH_SIZE = 50


def external_person_primary_id(name_key: str) -> str:
    return f"crisync:external-person:{name_key}"


def name_key_of(name: Mapping[str, Any]) -> str:
    return normalise_key([name.get("lastName") or "", name.get("firstName") or ""])


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


class PureReferences:
    """The engine's References: the mapping table, and Pure for external persons."""

    def __init__(
        self, store: Store, pure: PureClient, creating: KeyedLocks, known: RecentNames
    ) -> None:
        self._store = store
        self._pure = pure
        self._creating = creating
        self._known = known

    async def content(self, source: str, kind: str, key: str) -> ContentRef | None:
        async with self._store.reading() as conn:
            row = await mapping.get(conn, source, kind, key)
        if row is None:
            return None
        return ContentRef(PURE_TYPES[row.target_type].system_name, row.target_uuid)

    async def persons(self, source: str, kind: str, match_key: str) -> list[ContentRef]:
        async with self._store.reading() as conn:
            rows = await mapping.matching(conn, source, kind, match_key)
        return [
            ContentRef(PURE_TYPES[row.target_type].system_name, row.target_uuid) for row in rows
        ]

    async def external_person(self, name: Mapping[str, str]) -> ContentRef:
        key = name_key_of(name)
        uuid = await self._known_external(key)
        if uuid is None:
            # One lookup and create per name at a time, so concurrent objects share one.
            async with self._creating.hold(key):
                uuid = await self._known_external(key)
                if uuid is None:
                    uuid = await replaying(
                        partial(self._find_or_create_external, key, name),
                        f"find or create external person {key}",
                    )
                    async with self._store.transaction() as conn:
                        await external_persons.put(conn, key, uuid)
        return ContentRef(EXTERNAL_PERSON_SYSTEM_NAME, uuid)

    async def _known_external(self, key: str) -> str | None:
        uuid = self._known.get(key)
        if uuid is None:
            async with self._store.reading() as conn:
                uuid = await external_persons.get(conn, key)
            if uuid is not None:
                self._known.put(key, uuid)
        return uuid

    async def _find_or_create_external(self, key: str, name: Mapping[str, str]) -> str:
        """Safe to replay: a create whose answer was lost is found by the search first."""
        return await self._find_external(key, name) or await self._create_external(key, name)

    async def _find_external(self, key: str, name: Mapping[str, str]) -> str | None:
        """An external person of exactly this name in Pure; crisync's own first."""
        text = " ".join(part for part in (name.get("firstName"), name.get("lastName")) if part)
        page = await self._pure.search(EXTERNAL_PERSONS, text, size=NAME_SEARCH_SIZE)
        namesakes = [item for item in page.items if name_key_of(item.get("name") or {}) == key]
        ours = external_person_primary_id(key)
        for item in namesakes:
            if any(i.get("value") == ours for i in item.get("identifiers") or []):
                return str(item["uuid"])
        return str(namesakes[0]["uuid"]) if namesakes else None

    async def _create_external(self, key: str, name: Mapping[str, str]) -> str:
        body = {
            "name": dict(name),
            "identifiers": [
                primary_identifier(EXTERNAL_PERSON_ID_SOURCE, external_person_primary_id(key))
            ],
        }
        created = await self._pure.create(EXTERNAL_PERSONS, body)
        return str(created["uuid"])
