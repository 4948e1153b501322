"""Finding the content Pure holds already for a source object, before crisync creates any.

Pure's search is full-text only (the contract's queries offer `searchString`): crisync
searches for a match rule's value and then checks each hit's identifier or property
exactly, normalised as the rule says. When a value's words are so common that the search
returns more hits than a scan of the whole type costs, the type is scanned once with the
list operation reconcile uses, and the index it gives answers for a while.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from crisync.errors import PermanentError
from crisync.handlers.pure.client import Page, PureClient
from crisync.handlers.pure.compact_index import CompactIndex
from crisync.handlers.pure.mapping import MatchProbe
from crisync.mapping.compare import normalised, spellings
from crisync.mapping.rules import MatchRule

# Hits of one search that crisync checks: a value whose search finds more (every DOI shares
# the word "10") is looked up in a scan of the type instead, made once for all objects.
SEARCH_HITS = 100
SCAN_PAGE = 1000  # the contract's largest page
# How long a scan of a type answers before it is made again: content people add in Pure
# meanwhile is found once it is older than this and the scan that follows.
INDEX_MAX_AGE = 600.0
# Values whose referred content is remembered at once.
REFERRED_REMEMBERED = 10_000


class AmbiguousMatchError(PermanentError):
    """More than one Pure object fits: crisync never guesses; the object waits for a person."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message, api="crisync")
        self.candidates = candidates


@dataclass(frozen=True)
class Found:
    uuid: str
    probe: MatchProbe

    def describe(self) -> str:
        return f"matched by {self.probe.describe()}"


def values_at(item: dict[str, Any], rule: MatchRule) -> set[str]:
    """The normalised values a Pure object holds where the rule looks."""
    raw: list[Any] = []
    if rule.identifier is not None:
        for identifier in item.get("identifiers") or []:
            if not isinstance(identifier, dict):
                continue
            kind = identifier.get("typeDiscriminator")
            if kind == "PrimaryId" and identifier.get("idSource") == rule.identifier:
                raw.append(identifier.get("value"))
            elif (
                kind == "ClassifiedId"
                and (identifier.get("type") or {}).get("uri") == rule.identifier
            ):
                raw.append(identifier.get("id"))
    else:
        assert rule.path is not None  # a rule names one of the two
        raw.extend(_walk(item, rule.path.split(".")))
    return {value for value in (normalised(rule.compare, v) for v in raw) if value is not None}


def properties_read(rule: MatchRule) -> frozenset[str]:
    """The properties `values_at` reads of an object (and of objects within it on its way)."""
    if rule.identifier is not None:
        return frozenset({"identifiers"})
    assert rule.path is not None  # a rule names one of the two
    return frozenset(rule.path.split("."))


def _walk(value: Any, path: list[str]) -> Iterator[Any]:
    """Every value at the path; a list on the way is searched entry by entry."""
    if isinstance(value, list):
        for entry in value:
            yield from _walk(entry, path)
    elif not path:
        yield value
    elif isinstance(value, dict) and path[0] in value:
        yield from _walk(value[path[0]], path[1:])


@dataclass
class _Scan:
    made_at: float
    uuids_by_value: CompactIndex


@dataclass
class ContentIndex:
    """Scans of whole types, by (type, rule): for values too common to search for."""

    _scans: dict[tuple[str, str, str], _Scan] = field(default_factory=dict)
    # Content many objects refer to (a journal), by (type, place, comparison, value).
    _referred: dict[tuple[str, str, str, str], tuple[float, list[str]]] = field(
        default_factory=dict
    )
    _referring: dict[tuple[str, str, str, str], asyncio.Lock] = field(default_factory=dict)
    _scanning: dict[tuple[str, str, str], asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    def answers(self, pure_type: str, probe: MatchProbe) -> bool:
        """Whether this rule's values proved too common to search for: the scan answers."""
        return (pure_type, probe.rule.where, probe.rule.compare) in self._scans

    def remember(self, pure_type: str, probe: MatchProbe, uuids: list[str]) -> None:
        """What a value finds now (content just created for it, say)."""
        key = (pure_type, probe.rule.where, probe.rule.compare, probe.value)
        self._referred[key] = (time.monotonic(), uuids)

    async def referred(self, pure: PureClient, pure_type: str, probe: MatchProbe) -> list[str]:
        """`candidates`, remembered for a while: content many objects refer to (the journal
        of thousands of articles) costs one lookup, not one per object."""
        key = (pure_type, probe.rule.where, probe.rule.compare, probe.value)
        async with self._referring.setdefault(key, asyncio.Lock()):  # one lookup per value
            known = self._referred.get(key)
            if known is not None and time.monotonic() - known[0] <= INDEX_MAX_AGE:
                return known[1]
            uuids = await candidates(pure, pure_type, probe, self)
            if len(self._referred) >= REFERRED_REMEMBERED:
                # Bounded: past it, the memory starts again (a lock held now stays usable).
                self._referred.clear()
                self._referring = {key: self._referring[key]}
            self._referred[key] = (time.monotonic(), uuids)
            return uuids

    async def uuids(self, pure: PureClient, pure_type: str, probe: MatchProbe) -> list[str]:
        key = (pure_type, probe.rule.where, probe.rule.compare)
        scanning = self._scanning[key]
        scan = self._scans.get(key)
        # Only the first scan is waited for. A stale one answers the others while the lookup
        # that found it stale makes the next: a rescan of 100 pages holds up no handler.
        if scan is None or (stale(scan.made_at) and not scanning.locked()):
            async with scanning:
                scan = self._scans.get(key)
                if scan is None or stale(scan.made_at):
                    scan = self._scans[key] = await _scan(pure, pure_type, probe.rule)
        return scan.uuids_by_value.get(probe.value)


def stale(made_at: float) -> bool:
    """Whether a scan made then (time.monotonic()) is to be made again."""
    return time.monotonic() - made_at > INDEX_MAX_AGE


async def _scan(pure: PureClient, pure_type: str, rule: MatchRule) -> _Scan:
    uuids_by_value = CompactIndex()
    offset = 0
    while True:
        page = await pure.list_page(
            pure_type, offset=offset, size=SCAN_PAGE, keep=properties_read(rule)
        )
        for item in page.items:
            for value in values_at(item, rule):
                uuids_by_value.add(value, str(item["uuid"]))
        if not page.more_after(offset):
            return _Scan(time.monotonic(), uuids_by_value)
        offset += len(page.items)


async def candidates(
    pure: PureClient,
    pure_type: str,
    probe: MatchProbe,
    index: ContentIndex,
    searched: dict[str, Page] | None = None,
) -> list[str]:
    """The uuids of the Pure objects holding the probe's value where its rule looks.

    One search when it finds few; otherwise, and for the rest of a backfill once a rule's
    values proved that common, the type's scan answers without a search per object.
    `searched` holds the searches of the object's earlier rules, by text: rules that look
    for one value in different places (a Scopus id as a PrimaryId, as a ClassifiedId)
    share one search."""
    if not index.answers(pure_type, probe):
        text = " ".join(spellings(probe.rule.compare, probe.value))
        page = None if searched is None else searched.get(text)
        if page is None:
            page = await pure.search(pure_type, text, size=SEARCH_HITS)
            if searched is not None:
                searched[text] = page
        if page.count <= len(page.items):
            hits = [item for item in page.items if probe.value in values_at(item, probe.rule)]
            return list(dict.fromkeys(str(item["uuid"]) for item in hits))
    return await index.uuids(pure, pure_type, probe)
