"""The Pure handler: create or update the Pure content of a source object, then lock it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from crisync.errors import PermanentError
from crisync.handlers.base import HandlerResult
from crisync.handlers.pure.client import (
    Page,
    PureClient,
    PureConflictError,
    find_by_primary_id,
    replaying,
)
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.delete import delete_in_pure
from crisync.handlers.pure.last_write import (
    CLASS_PROPERTIES,
    changed_patch,
    entry_digest,
    property_digests,
    written_digests,
)
from crisync.handlers.pure.mapping import PURE, PureContent, mapping_for, to_pure
from crisync.handlers.pure.match import AmbiguousMatchError, Found, candidates
from crisync.handlers.pure.merge_patch import merge_patch_between
from crisync.handlers.pure.references import PureReferences
from crisync.handlers.pure.shared_lists import MERGED_LISTS, foreign_identifiers
from crisync.mapping.scope import out_of_scope
from crisync.outcome import OutcomeAction
from crisync.state import create_intents, mapping
from crisync.state.inbox import InboxEvent
from crisync.state.mapping import MappingRow, Origin

# One re-read after a version conflict; a second conflict is retried later by the dispatcher.
UPDATE_ATTEMPTS = 2


async def replicate_to_pure(event: InboxEvent, ctx: PureContext) -> HandlerResult:
    if event.action == "delete":
        return await delete_in_pure(event, ctx)
    reason = out_of_scope(mapping_for(event, ctx.mappings), event.payload)
    if reason is not None:
        return await _out_of_scope(event, ctx, reason)
    references = PureReferences(
        ctx.store,
        ctx.pure,
        creating=ctx.external_person_locks,
        known=ctx.external_person_uuids,
        index=ctx.content_index,
        people=ctx.external_person_index,
    )
    target = await to_pure(
        event,
        ctx.mappings,
        references,
        managing_organization=ctx.pure_config.managing_organization,
    )
    known = await mapping.get(ctx.store.lookups, event.source, event.kind, event.key)
    if known is not None and known.target_type != target.pure_type:
        raise PermanentError(
            f"{event.object_key} is {known.target_type} {known.target_uuid} in Pure, but its "
            f"mapping now says {target.pure_type}; delete the old one or restore the mapping",
            api="crisync",
        )

    if known is None:
        return await _first_contact(event, ctx, target)
    return await _known_content(event, ctx, target, known)


async def _known_content(
    event: InboxEvent, ctx: PureContext, target: PureContent, known: MappingRow
) -> HandlerResult:
    """Content the mapping knows: nothing to do, a lock, or an update."""
    if target.link_only:
        return HandlerResult("unchanged", known.target_type, known.target_uuid, mapping=None)
    if known.payload_hash == target.payload_hash:
        if known.locked:
            # Nothing for Pure; a match key the mapping row lacks is only local knowledge.
            refreshed = None
            if known.match_key != target.match_key:
                refreshed = replace(known, match_key=target.match_key)
            return HandlerResult(
                "unchanged", known.target_type, known.target_uuid, mapping=refreshed
            )
        await ctx.pure.lock(known.target_type, known.target_uuid)
        return HandlerResult(
            "locked",
            known.target_type,
            known.target_uuid,
            mapping=replace(
                known, locked=True, changed_at=event.changed_at, match_key=target.match_key
            ),
        )
    written = await _patch(ctx.pure, known, target)
    if written is None:
        written = await _update(
            ctx.pure, known.target_type, known.target_uuid, target, last_write=known.written
        )
    if written is None:
        # A 404 is no proof the content is gone (an access definition can hide it).
        written = await _update_found_by_primary_id(ctx.pure, target)
    if written is None:
        return await _first_contact(event, ctx, target)
    # Content merged in Pure since carries the survivor's lock state, unknown here.
    if not known.locked or written.uuid != known.target_uuid:
        await ctx.pure.lock(target.pure_type, written.uuid)
    return _result("updated", event, target, written, known.origin)


async def _out_of_scope(event: InboxEvent, ctx: PureContext, reason: str) -> HandlerResult:
    """Not replicated; content it had in Pure gets the mapping's delete policy, once."""
    known = await mapping.get(ctx.store.lookups, event.source, event.kind, event.key)
    if known is None or (not known.locked and not known.payload_hash):
        return HandlerResult("skipped", None, None, mapping=None, note=f"out of scope: {reason}")
    left = await delete_in_pure(event, ctx)
    return replace(left, note=f"left the mapping's scope: {reason}")


async def _first_contact(event: InboxEvent, ctx: PureContext, target: PureContent) -> HandlerResult:
    """Take over what Pure holds already for the object; create it only when there is none."""
    found = await _existing_content(event, ctx, target)
    if found is not None and target.link_only:
        return await _link(event, ctx, target, found)
    if found is not None:
        written = await _update(ctx.pure, target.pure_type, found.uuid, target)
        if written is not None:
            await ctx.pure.lock(target.pure_type, written.uuid)
            written = replace(written, note=_joined(found.describe(), written.note))
            return _result("adopted", event, target, written, "adopted")
        # Gone between the search and the read: nothing to take over after all.
    if not target.create:
        note = "no Pure content matches and the mapping does not create (create = false)"
        return HandlerResult("skipped", None, None, mapping=None, note=note)
    uuid, version = await _create_once(event, ctx, target)
    await ctx.pure.lock(target.pure_type, uuid)
    return _result("created", event, target, Written(uuid, version), "created")


async def _link(
    event: InboxEvent, ctx: PureContext, target: PureContent, found: Found
) -> HandlerResult:
    """Refer to the content found, writing nothing; people lists recognise it by its own
    properties in Pure (its reference key), read once now."""
    match_key = None
    if target.reference_key:
        match_key = target.match_key_in(await ctx.pure.get(target.pure_type, found.uuid))
    link = Written(found.uuid, None, found.describe())
    return _result("linked", event, target, link, "linked", match_key=match_key)


async def _existing_content(
    event: InboxEvent, ctx: PureContext, target: PureContent
) -> Found | None:
    """The one Pure object the first match rule with hits finds; several: never guessed."""
    searched: dict[str, Page] = {}
    for probe in target.probes:
        uuids = await candidates(ctx.pure, target.pure_type, probe, ctx.content_index, searched)
        if not uuids:
            continue
        what = f"{event.object_key}: Pure {target.pure_type} with {probe.describe()}"
        retry = f"then `crisync retry {event.source}/{event.kind}/{event.key}`"
        if len(uuids) > 1:
            raise AmbiguousMatchError(
                f"{what}: {len(uuids)} candidates ({', '.join(uuids)}); crisync does not "
                f"guess: merge them in Pure or change the match rules, {retry}",
                uuids,
            )
        owners = await mapping.of_target_uuid(ctx.store.lookups, PURE, uuids[0])
        mine = (event.source, event.kind, event.key)
        others = [row for row in owners if (row.source, row.kind, row.key) != mine]
        if others:
            owner = others[0]
            raise AmbiguousMatchError(
                f"{what}: {uuids[0]} is already the content of {owner.source} {owner.kind} "
                f"{owner.key}; merge the two in the source, {retry}",
                uuids,
            )
        return Found(uuids[0], probe)
    return None


@dataclass(frozen=True)
class Written:
    """Pure content as crisync left it."""

    uuid: str
    version: str | None
    note: str | None = None  # what a person should know about it
    # Other sources' identifiers the content carries beside crisync's.
    foreign_identifiers: tuple[dict[str, Any], ...] = ()


def _joined(*notes: str | None) -> str | None:
    return "; ".join(note for note in notes if note) or None


def _result(
    action: OutcomeAction,
    event: InboxEvent,
    target: PureContent,
    written: Written,
    origin: Origin,
    *,
    match_key: str | None = None,
) -> HandlerResult:
    """The result, with the mapping row to store: content found only to refer to (linked) is
    not crisync's to lock, and its match key comes from what Pure holds."""
    linked = origin == "linked"
    row = MappingRow(
        event.source,
        event.kind,
        event.key,
        PURE,
        target.pure_type,
        written.uuid,
        written.version,
        target.payload_hash,
        locked=not linked,
        changed_at=event.changed_at,
        match_key=match_key if linked else target.match_key,
        origin=origin,
        written=None if linked else property_digests(target),
        foreign_identifiers=written.foreign_identifiers,
    )
    return HandlerResult(action, target.pure_type, written.uuid, mapping=row, note=written.note)


async def _create_once(
    event: InboxEvent, ctx: PureContext, target: PureContent
) -> tuple[str, str | None]:
    """Create, unless an earlier try created it and its answer was lost: then find and update it.

    The intent is committed before the create, so a crash or a timeout after Pure
    stored the object leaves a trace; only then does a search by PrimaryId cost a request.
    A transient failure is replayed at once like any Pure request, as a search and then
    the create, so one bad answer does not send the object back to the dispatcher.
    """
    interrupted = not await create_intents.begin(
        ctx.store,
        event.source,
        event.kind,
        event.key,
        target_type=target.pure_type,
        id_source=target.id_source,
        primary_id=target.primary_id,
    )

    async def find_or_create() -> tuple[str, str | None]:
        nonlocal interrupted
        if interrupted:
            written = await _update_found_by_primary_id(ctx.pure, target)
            if written is not None:
                return written.uuid, written.version
        interrupted = True  # a create that fails from here on may have stored the object
        created = await ctx.pure.create(target.pure_type, target.body)
        return str(created["uuid"]), created.get("version")

    return await replaying(find_or_create, f"create {target.pure_type} {target.primary_id}")


async def _update_found_by_primary_id(pure: PureClient, target: PureContent) -> Written | None:
    """Update the content carrying the object's PrimaryId, if Pure shows one."""
    found = await find_by_primary_id(pure, target.pure_type, target.id_source, target.primary_id)
    if found is None:
        return None
    return await _update(pure, target.pure_type, str(found["uuid"]), target)


async def _patch(pure: PureClient, known: MappingRow, target: PureContent) -> Written | None:
    """One PUT of the owned properties changed since crisync's last write, with that write's
    version; None when that needs a read first: what crisync wrote is unknown, or Pure's
    content moved on (409) or away (404) since."""
    if known.written is None or known.target_version is None:
        return None
    patch = changed_patch(target, known.written, known.foreign_identifiers)
    if patch is None:
        return None
    written = Written(
        known.target_uuid, known.target_version, foreign_identifiers=known.foreign_identifiers
    )
    if not patch:
        return written
    try:
        updated = await pure.update(
            known.target_type, known.target_uuid, {**patch, "version": known.target_version}
        )
    except PureConflictError:
        return None
    except PermanentError as exc:
        if exc.status == 404:
            return None
        raise
    return replace(written, uuid=str(updated["uuid"]), version=updated.get("version"))


async def _update(
    pure: PureClient,
    pure_type: str,
    uuid: str,
    target: PureContent,
    *,
    last_write: bytes | None = None,
) -> Written | None:
    """GET → merge what crisync owns → PUT of the difference with the version just read;
    None when Pure has no such object any more. `last_write` is the mapping row's record of
    crisync's last write to it, if any. A GET of merged content follows Pure's 301
    to the survivor, whose uuid is what the caller stores. No PUT when Pure holds that
    content already: after a conflict, that is often crisync's own write, whose answer was
    lost."""
    for attempt in range(1, UPDATE_ATTEMPTS + 1):
        try:
            current = await pure.get(pure_type, uuid)
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        wanted = merge_owned(current, target, last_write)
        written = Written(
            str(current["uuid"]),
            current.get("version"),
            class_kept(current, target),
            tuple(foreign_identifiers(wanted, target)),
        )
        if wanted == current:
            return written
        patch = merge_patch_between(current, wanted)
        try:
            updated = await pure.update(
                pure_type, written.uuid, {**patch, "version": written.version}
            )
        except PureConflictError:
            if attempt == UPDATE_ATTEMPTS:
                raise
            continue
        return replace(written, uuid=str(updated["uuid"]), version=updated.get("version"))
    raise AssertionError("unreachable")  # pragma: no cover


def class_kept(current: dict[str, Any], target: PureContent) -> str | None:
    """Say so when content found in Pure keeps a class other than the mapping's, and what
    of the mapping's that class has no property for."""
    theirs, ours = current.get("typeDiscriminator"), target.body.get("typeDiscriminator")
    if theirs is None or ours is None or theirs == ours:
        return None
    unwritten = sorted(not_of_class(str(theirs), target.body))
    left_out = f"; not written: {', '.join(unwritten)}, not of that class" if unwritten else ""
    return f"kept Pure's class {theirs} and its type (the mapping makes {ours}){left_out}"


def not_of_class(discriminator: str, body: dict[str, Any]) -> set[str]:
    """The body's properties a Pure class does not have (the contract says which it has)."""
    # Imported here: the contract and its validator (jsonschema, YAML) cost the daemon about
    # 4 MB to import and 15 MB once read, and only content of another class needs them.
    from crisync.handlers.pure.openapi import PureContract

    known = PureContract.load().property_names(discriminator)
    return {name for name in body if name not in known} if known else set()


def merge_owned(
    current: dict[str, Any], target: PureContent, last_write: bytes | None = None
) -> dict[str, Any]:
    """The current object with crisync's properties replaced; what people edited elsewhere stays.

    An owned property the mapping gave no value this time is cleared; custom-defined fields,
    identifiers and electronic versions are merged entry by entry, so others' entries stay:
    an identifier is the same one when its kind, source (or type) and value are, and
    crisync adds only those not there yet, and removes only those it wrote itself last time
    (`last_write`) that the source no longer gives. HR's source id on a person, a file an
    editor uploaded, are never removed. Content of another class than the mapping's (found
    in Pure, say) keeps its class and type.
    """
    last = written_digests(last_write)
    merged = dict(current)
    keep_class = class_kept(current, target) is not None
    foreign = not_of_class(str(current["typeDiscriminator"]), target.body) if keep_class else set()
    for name in target.owned - target.body.keys() - MERGED_LISTS.keys():
        if name in current:
            merged[name] = [] if isinstance(current[name], list) else None
    for name, value in target.body.items():
        if keep_class and (name in CLASS_PROPERTIES or name in foreign):
            continue
        key_of = MERGED_LISTS.get(name)
        if key_of is not None:
            ours = {key_of(entry) for entry in value}
            present = [
                entry
                for entry in current.get(name) or []
                if key_of(entry) in ours or entry_digest(name, key_of(entry)) not in last
            ]
            held = {key_of(entry) for entry in present}
            merged[name] = present + [entry for entry in value if key_of(entry) not in held]
        elif name == "customDefinedFields":
            merged[name] = {**(current.get(name) or {}), **value}
        else:
            merged[name] = value
    return merged
