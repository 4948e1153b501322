"""`crisync reconcile`: the mapping checked against, or rebuilt from, what Pure holds.

Every Pure type some mapping writes is listed page by page; the PrimaryId identifiers
crisync wrote (``source:kind:key`` with the mapping's idSource) say which source object
each Pure object stands for. Compared with the mapping table, that gives:

- unknown in the mapping: Pure has the object, the mapping does not (a lost or older
  state database). The row is rebuilt, unlocked and without a payload hash, so the next
  change of the object writes and locks it instead of creating a second one;
- uuid mismatches: the row names other content than the one carrying the PrimaryId, or
  content merged in Pure since (found through ``previousUuids``). The row is corrected;
- missing in Pure: no Pure object is, or was merged into, the one the row names. The row
  is dropped, so the next change creates the object again;
- without PrimaryId: the row's content is in Pure but lost its identifier (an edit). Only
  reported: recreating it would duplicate it;
- duplicates: two or more Pure objects carry one PrimaryId. Only reported: merging is a
  decision for people in Pure.

External persons crisync created carry a PrimaryId too, and are rebuilt the same way.
With ``apply=False`` nothing is written. Writes happen at the end in one transaction and
skip any row a running daemon changed meanwhile.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from crisync.errors import PermanentError
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.mapping import PURE, match_key_of
from crisync.handlers.pure.primary_ids import crisync_keys, primary_ids
from crisync.handlers.pure.references import (
    EXTERNAL_PERSON_ID_SOURCE,
    EXTERNAL_PERSONS,
    external_person_primary_id,
)
from crisync.mapping.rules import MappingsConfig, ObjectMapping
from crisync.state import external_persons, mapping
from crisync.state.inbox import object_key
from crisync.state.mapping import MappingRow
from crisync.state.store import Store, utc_now

LIST_PAGE_SIZE = 1000  # the contract's maximum for list operations
EXTERNAL_PERSON_PREFIX = external_person_primary_id("")


@dataclass(frozen=True)
class Difference:
    object_key: str  # source/kind/key, or the name key of an external person
    pure_type: str
    mapped_uuid: str | None
    pure_uuids: tuple[str, ...]


@dataclass
class ReconcileReport:
    applied: bool
    scanned: dict[str, int] = field(default_factory=dict)  # Pure type → objects listed
    skipped: dict[str, str] = field(default_factory=dict)  # Pure type → why it was not
    unknown_in_mapping: list[Difference] = field(default_factory=list)
    uuid_mismatches: list[Difference] = field(default_factory=list)
    missing_in_pure: list[Difference] = field(default_factory=list)
    without_primary_id: list[Difference] = field(default_factory=list)
    duplicates: list[Difference] = field(default_factory=list)
    match_keys_filled: int = 0
    external_persons_rebuilt: int = 0

    def render(self) -> str:
        return render(self)

    @property
    def consistent(self) -> bool:
        return not (
            self.unknown_in_mapping
            or self.uuid_mismatches
            or self.missing_in_pure
            or self.without_primary_id
            or self.duplicates
            or self.external_persons_rebuilt
        )


@dataclass
class _Plan:
    """What reconciling will write, with the rows as they were read."""

    puts: list[tuple[MappingRow | None, MappingRow]] = field(default_factory=list)
    drops: list[MappingRow] = field(default_factory=list)
    external_persons: dict[str, str] = field(default_factory=dict)


async def reconcile(
    store: Store, pure: PureClient, mappings: MappingsConfig, *, apply: bool
) -> ReconcileReport:
    report = ReconcileReport(applied=apply)
    plan = _Plan()
    by_type: dict[str, dict[tuple[str, str], ObjectMapping]] = defaultdict(dict)
    for source, kind, rules in mappings.all():
        if rules.target == PURE:
            by_type[rules.type][(source, kind)] = rules
    for pure_type in sorted(by_type):
        objects = await _list_all(pure, pure_type, report)
        if objects is not None:
            scan = _TypeScan(pure_type, by_type[pure_type], objects)
            async with store.reading() as conn:
                rows = await mapping.of_target_type(conn, PURE, pure_type)
            scan.compare(rows, report, plan)
    objects = await _list_all(pure, EXTERNAL_PERSONS, report)
    if objects is not None:
        await _compare_external_persons(store, objects, report, plan)
    if apply:
        await _write(store, plan)
    return report


async def _list_all(
    pure: PureClient, pure_type: str, report: ReconcileReport
) -> list[dict[str, Any]] | None:
    objects: list[dict[str, Any]] = []
    offset = 0
    while True:
        try:
            page = await pure.list_page(pure_type, offset=offset, size=LIST_PAGE_SIZE)
        except PermanentError as exc:
            if exc.status not in (404, 405):
                raise
            # This Pure (API version) has no such content type: nothing of it can be mapped.
            report.skipped[pure_type] = exc.message
            return None
        objects.extend(page.items)
        if not page.more_after(offset):
            report.scanned[pure_type] = len(objects)
            return objects
        offset += len(page.items)


class _TypeScan:
    """The objects of one Pure type, read for the PrimaryIds crisync wrote."""

    def __init__(
        self,
        pure_type: str,
        rules_of: dict[tuple[str, str], ObjectMapping],
        objects: list[dict[str, Any]],
    ) -> None:
        self.pure_type = pure_type
        self.rules_of = rules_of
        # (source, kind, key) → the objects carrying its PrimaryId (more than one: duplicates)
        self.carriers: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for item in objects:
            for key in crisync_keys(item, rules_of):
                self.carriers[key].append(item)
        self.listed = {str(item["uuid"]): item for item in objects}
        self.survivor_of = {
            str(previous): str(item["uuid"])
            for item in objects
            for previous in item.get("previousUuids") or []
        }

    def compare(self, rows: list[MappingRow], report: ReconcileReport, plan: _Plan) -> None:
        by_key = {
            (row.source, row.kind, row.key): row
            for row in rows
            if (row.source, row.kind) in self.rules_of
        }
        for key, items in sorted(self.carriers.items()):
            self._carried(key, items, by_key.get(key), report, plan)
        for key, row in sorted(by_key.items()):
            if key not in self.carriers:
                self._uncarried(row, report, plan)

    def _carried(
        self,
        key: tuple[str, str, str],
        items: list[dict[str, Any]],
        row: MappingRow | None,
        report: ReconcileReport,
        plan: _Plan,
    ) -> None:
        uuids = tuple(str(item["uuid"]) for item in items)
        mapped = row.target_uuid if row else None
        difference = Difference(object_key(*key), self.pure_type, mapped, uuids)
        if len(items) > 1:
            report.duplicates.append(difference)
            return
        (item,) = items
        match_key = match_key_of(self.rules_of[key[:2]], item)
        if row is None:
            report.unknown_in_mapping.append(difference)
            rebuilt = MappingRow(
                *key,
                target=PURE,
                target_type=self.pure_type,
                target_uuid=uuids[0],
                target_version=item.get("version"),
                payload_hash=b"",
                locked=False,
                changed_at=utc_now(),
                match_key=match_key,
            )
            plan.puts.append((None, rebuilt))
        elif row.target_uuid != uuids[0]:
            report.uuid_mismatches.append(difference)
            plan.puts.append((row, _pointed_at(row, item, match_key)))
        elif row.match_key is None and match_key is not None:
            report.match_keys_filled += 1
            plan.puts.append((row, replace(row, match_key=match_key)))

    def _uncarried(self, row: MappingRow, report: ReconcileReport, plan: _Plan) -> None:
        if row.origin == "linked":
            return  # content crisync only refers to carries no PrimaryId of crisync's
        key = object_key(row.source, row.kind, row.key)
        difference = Difference(key, self.pure_type, row.target_uuid, ())
        survivor = self.survivor_of.get(row.target_uuid)
        if row.target_uuid in self.listed:
            report.without_primary_id.append(difference)
        elif survivor is not None:
            report.uuid_mismatches.append(replace(difference, pure_uuids=(survivor,)))
            plan.puts.append((row, _pointed_at(row, self.listed[survivor], row.match_key)))
        else:
            report.missing_in_pure.append(difference)
            plan.drops.append(row)


def _pointed_at(row: MappingRow, item: dict[str, Any], match_key: str | None) -> MappingRow:
    """The row moved to other content, whose state crisync does not know yet."""
    return replace(
        row,
        target_uuid=str(item["uuid"]),
        target_version=item.get("version"),
        payload_hash=b"",
        locked=False,
        match_key=match_key,
        written=None,
        foreign_identifiers=(),
    )


async def _compare_external_persons(
    store: Store, objects: list[dict[str, Any]], report: ReconcileReport, plan: _Plan
) -> None:
    async with store.reading() as conn:
        known = await external_persons.all_external_persons(conn)
    for item in objects:
        for value in primary_ids(item, EXTERNAL_PERSON_ID_SOURCE):
            name_key = value.removeprefix(EXTERNAL_PERSON_PREFIX)
            if value.startswith(EXTERNAL_PERSON_PREFIX) and name_key not in known:
                known[name_key] = plan.external_persons[name_key] = str(item["uuid"])
    report.external_persons_rebuilt = len(plan.external_persons)


async def _write(store: Store, plan: _Plan) -> None:
    async with store.transaction() as conn:
        for before, after in plan.puts:
            if await mapping.get(conn, after.source, after.kind, after.key) == before:
                await mapping.put(conn, after)
        for row in plan.drops:
            if await mapping.get(conn, row.source, row.kind, row.key) == row:
                await mapping.delete(conn, row.source, row.kind, row.key)
        for name_key, uuid in plan.external_persons.items():
            if await external_persons.get(conn, name_key) is None:
                await external_persons.put(conn, name_key, uuid)


def render(report: ReconcileReport) -> str:
    lines = []
    for pure_type, count in sorted(report.scanned.items()):
        lines.append(f"{pure_type}: {count} objects listed")
    for pure_type, why in sorted(report.skipped.items()):
        lines.append(f"{pure_type}: skipped ({why})")
    done = report.applied
    sections = (
        ("unknown in the mapping", report.unknown_in_mapping, "rebuilt" if done else "to rebuild"),
        ("uuid mismatches", report.uuid_mismatches, "corrected" if done else "to correct"),
        ("missing in Pure", report.missing_in_pure, "dropped" if done else "to drop"),
        ("without their PrimaryId in Pure", report.without_primary_id, "left for people"),
        ("duplicates in Pure", report.duplicates, "left for people to merge"),
    )
    for title, differences, what in sections:
        lines.append(f"{title}: {len(differences)}" + (f" ({what})" if differences else ""))
        lines.extend(
            f"  {d.object_key} {d.pure_type} mapped {d.mapped_uuid or '-'}"
            f" in Pure {', '.join(d.pure_uuids) or '-'}"
            for d in differences
        )
    if report.match_keys_filled:
        lines.append(f"match keys filled in: {report.match_keys_filled}")
    if report.external_persons_rebuilt:
        verb = "rebuilt" if done else "to rebuild"
        lines.append(f"external persons {verb}: {report.external_persons_rebuilt}")
    lines.append("consistent" if report.consistent else "differences found")
    return "\n".join(lines)
