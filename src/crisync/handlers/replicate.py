"""The Pure handler: create or update the Pure content of a source object, then lock it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crisync.handlers.base import HandlerContext, HandlerResult
from crisync.handlers.elements_writeback import writeback_follow_ups
from crisync.handlers.pure_client import PureClient, PureConflictError
from crisync.handlers.pure_mapping import PureTarget, to_pure
from crisync.outcome import OutcomeAction
from crisync.state import create_intents, mapping
from crisync.state.inbox import InboxEvent
from crisync.state.mapping import MappingRow

# One re-read after a version conflict; a second conflict is retried later by the dispatcher.
UPDATE_ATTEMPTS = 2


async def replicate_to_pure(event: InboxEvent, ctx: HandlerContext) -> HandlerResult:
    target = to_pure(event, ctx.pure_config)
    async with ctx.store.reading() as conn:
        known = await mapping.get(conn, event.source, event.kind, event.key)

    if known is not None and known.payload_hash == target.payload_hash:
        if known.locked:
            return HandlerResult("unchanged", known.pure_type, known.pure_uuid, mapping=None)
        await ctx.pure.lock(known.pure_type, known.pure_uuid)
        return HandlerResult(
            "locked",
            known.pure_type,
            known.pure_uuid,
            mapping=replace(known, locked=True, changed_at=event.changed_at),
        )

    if known is None:
        uuid, version = await _create_once(event, ctx, target)
        await ctx.pure.lock(target.pure_type, uuid)
        action: OutcomeAction = "created"
    else:
        uuid, version = await _update(ctx.pure, known.pure_type, known.pure_uuid, target)
        if not known.locked:
            await ctx.pure.lock(known.pure_type, uuid)
        action = "updated"
    row = MappingRow(
        event.source,
        event.kind,
        event.key,
        target.pure_type,
        uuid,
        version,
        target.payload_hash,
        locked=True,
        changed_at=event.changed_at,
    )
    follow_ups = writeback_follow_ups(event, ctx, target.pure_type, uuid) if known is None else ()
    return HandlerResult(action, target.pure_type, uuid, mapping=row, follow_ups=follow_ups)


async def _create_once(
    event: InboxEvent, ctx: HandlerContext, target: PureTarget
) -> tuple[str, str | None]:
    """Create, unless an earlier try created it and its answer was lost: then find and update it.

    The intent is committed before the create, so a crash or a timeout after Pure
    stored the object leaves a trace; only then does a search by PrimaryId cost a request.
    """
    async with ctx.store.transaction() as conn:
        interrupted = await create_intents.exists(conn, event.source, event.kind, event.key)
        if not interrupted:
            await create_intents.add(
                conn,
                event.source,
                event.kind,
                event.key,
                pure_type=target.pure_type,
                id_source=target.id_source,
                primary_id=target.primary_id,
            )
    if interrupted:
        found = await find_by_primary_id(
            ctx.pure, target.pure_type, target.id_source, target.primary_id
        )
        if found is not None:
            return await _update(ctx.pure, target.pure_type, str(found["uuid"]), target)
    created = await ctx.pure.create(target.pure_type, target.body)
    return str(created["uuid"]), created.get("version")


async def find_by_primary_id(
    pure: PureClient, pure_type: str, id_source: str, value: str
) -> dict[str, Any] | None:
    """The Pure object carrying exactly this PrimaryId, if there is one."""
    for item in await pure.search(pure_type, value):
        for identifier in item.get("identifiers") or []:
            if (
                identifier.get("typeDiscriminator") == "PrimaryId"
                and identifier.get("idSource") == id_source
                and identifier.get("value") == value
            ):
                return item
    return None


async def _update(
    pure: PureClient, pure_type: str, uuid: str, target: PureTarget
) -> tuple[str, str | None]:
    """GET → merge what crisync owns → PUT with the version just read."""
    for attempt in range(1, UPDATE_ATTEMPTS + 1):
        current = await pure.get(pure_type, uuid)
        try:
            updated = await pure.update(
                pure_type, str(current["uuid"]), merge_owned(current, target)
            )
        except PureConflictError:
            if attempt == UPDATE_ATTEMPTS:
                raise
            continue
        return str(updated["uuid"]), updated.get("version")
    raise AssertionError("unreachable")  # pragma: no cover


def merge_owned(current: dict[str, Any], target: PureTarget) -> dict[str, Any]:
    """The current object with crisync's properties replaced; what people edited elsewhere stays."""
    merged = dict(current)
    for name, value in target.body.items():
        if name == "identifiers":
            others = [
                identifier
                for identifier in current.get("identifiers") or []
                if not (
                    identifier.get("typeDiscriminator") == "PrimaryId"
                    and identifier.get("idSource") == target.id_source
                )
            ]
            merged[name] = others + value
        else:
            merged[name] = value
    return merged
