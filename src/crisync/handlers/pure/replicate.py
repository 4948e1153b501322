"""The Pure handler: create or update the Pure content of a source object, then lock it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crisync.errors import PermanentError
from crisync.handlers.base import HandlerResult
from crisync.handlers.pure.client import (
    PureClient,
    PureConflictError,
    find_by_primary_id,
    has_primary_id,
    replaying,
)
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.delete import delete_in_pure
from crisync.handlers.pure.mapping import PURE, PureContent, to_pure
from crisync.handlers.pure.references import PureReferences
from crisync.outcome import OutcomeAction
from crisync.state import create_intents, mapping
from crisync.state.inbox import InboxEvent
from crisync.state.mapping import MappingRow

# One re-read after a version conflict; a second conflict is retried later by the dispatcher.
UPDATE_ATTEMPTS = 2


async def replicate_to_pure(event: InboxEvent, ctx: PureContext) -> HandlerResult:
    if event.action == "delete":
        return await delete_in_pure(event, ctx)
    references = PureReferences(ctx.store, ctx.pure, ctx.external_person_locks)
    target = await to_pure(
        event,
        ctx.mappings,
        references,
        managing_organization=ctx.pure_config.managing_organization,
    )
    async with ctx.store.reading() as conn:
        known = await mapping.get(conn, event.source, event.kind, event.key)
    if known is not None and known.target_type != target.pure_type:
        raise PermanentError(
            f"{event.object_key} is {known.target_type} {known.target_uuid} in Pure, but its "
            f"mapping now says {target.pure_type}; delete the old one or restore the mapping",
            api="crisync",
        )

    if known is not None and known.payload_hash == target.payload_hash:
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

    updated = None
    if known is not None:
        updated = await _update(ctx.pure, known.target_type, known.target_uuid, target)
    if updated is None:  # not mapped yet, or deleted in Pure since
        uuid, version = await _create_once(event, ctx, target)
        await ctx.pure.lock(target.pure_type, uuid)
        action: OutcomeAction = "created"
    else:
        uuid, version = updated
        # Content merged in Pure since carries the survivor's lock state, unknown here.
        if known is None or not known.locked or uuid != known.target_uuid:
            await ctx.pure.lock(target.pure_type, uuid)
        action = "updated"
    row = MappingRow(
        event.source,
        event.kind,
        event.key,
        PURE,
        target.pure_type,
        uuid,
        version,
        target.payload_hash,
        locked=True,
        changed_at=event.changed_at,
        match_key=target.match_key,
    )
    return HandlerResult(action, target.pure_type, uuid, mapping=row)


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
            found = await find_by_primary_id(
                ctx.pure, target.pure_type, target.id_source, target.primary_id
            )
            if found is not None:
                updated = await _update(ctx.pure, target.pure_type, str(found["uuid"]), target)
                if updated is not None:
                    return updated
        interrupted = True  # a create that fails from here on may have stored the object
        created = await ctx.pure.create(target.pure_type, target.body)
        return str(created["uuid"]), created.get("version")

    return await replaying(find_or_create, f"create {target.pure_type} {target.primary_id}")


async def _update(
    pure: PureClient, pure_type: str, uuid: str, target: PureContent
) -> tuple[str, str | None] | None:
    """GET → merge what crisync owns → PUT with the version just read; None when Pure has
    no such object any more. A GET of merged content follows Pure's 301 to the survivor,
    whose uuid is what the caller stores. No PUT when Pure holds that content already:
    after a conflict, that is often crisync's own write, whose answer was lost."""
    for attempt in range(1, UPDATE_ATTEMPTS + 1):
        try:
            current = await pure.get(pure_type, uuid)
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        wanted = merge_owned(current, target)
        if wanted == current:
            return str(current["uuid"]), current.get("version")
        try:
            updated = await pure.update(pure_type, str(current["uuid"]), wanted)
        except PureConflictError:
            if attempt == UPDATE_ATTEMPTS:
                raise
            continue
        return str(updated["uuid"]), updated.get("version")
    raise AssertionError("unreachable")  # pragma: no cover


def merge_owned(current: dict[str, Any], target: PureContent) -> dict[str, Any]:
    """The current object with crisync's properties replaced; what people edited elsewhere stays.

    An owned property the mapping gave no value this time is cleared; custom-defined fields
    and identifiers are merged entry by entry, so others' entries stay. Of the identifiers
    only the PrimaryId crisync wrote for this object is crisync's: another source's PrimaryId
    of the same idSource (HR's source id on a person, say) is never removed.
    """
    merged = dict(current)
    for name in target.owned - target.body.keys():
        if name in current:
            merged[name] = [] if isinstance(current[name], list) else None
    for name, value in target.body.items():
        if name == "identifiers":
            others = [
                identifier
                for identifier in current.get("identifiers") or []
                if not has_primary_id(
                    {"identifiers": [identifier]}, target.id_source, target.primary_id
                )
            ]
            merged[name] = others + value
        elif name == "customDefinedFields":
            merged[name] = {**(current.get(name) or {}), **value}
        else:
            merged[name] = value
    return merged
