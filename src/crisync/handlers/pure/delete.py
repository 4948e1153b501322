"""Deletions: what a source object's disappearance does to its Pure content, per mapping.

`on_delete` in the object's mapping decides:

- ``unlock`` (the default): Pure keeps the content as ordinary, editable content. The
  mapping row stays (unlocked, with no payload hash), so if the source object comes back
  crisync updates that content instead of making a second one.
- ``delete``: the content is deleted in Pure and the mapping row dropped.
- ``ignore``: Pure is not touched; the content stays locked and mapped.

Content crisync found in Pure rather than created is never deleted: adopted content is
unlocked under ``delete`` too, and content a link-only mapping refers to loses its link only.

Every policy ends in the outcome ``deleted``.
"""

from __future__ import annotations

from crisync.errors import PermanentError
from crisync.handlers.base import HandlerResult
from crisync.handlers.pure.client import PureClient, find_by_primary_id
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.mapping import PURE, id_source_of, mapping_for, primary_id_of
from crisync.state import mapping
from crisync.state.inbox import InboxEvent
from crisync.state.mapping import MappingRow


async def delete_in_pure(event: InboxEvent, ctx: PureContext) -> HandlerResult:
    known = await mapping.get(ctx.store.lookups, event.source, event.kind, event.key)
    rules = mapping_for(event, ctx.mappings)
    policy = rules.on_delete
    if known is not None and known.origin == "linked":
        # Found and referred to, never crisync's: only the link goes.
        return HandlerResult(
            "deleted", known.target_type, known.target_uuid, mapping=None, forget_mapping=True
        )
    if known is not None and known.origin == "adopted" and policy == "delete":
        policy = "unlock"  # someone else's content first: taken over, never deleted
    if policy == "ignore":
        if known is None:
            return HandlerResult("deleted", None, None, mapping=None)
        return HandlerResult("deleted", known.target_type, known.target_uuid, mapping=None)
    pure_type = known.target_type if known else rules.type
    uuid = known.target_uuid if known else None
    if uuid is None:
        # Not mapped: never replicated, or the state database was lost since.
        primary_id = primary_id_of(event.source, event.kind, event.key)
        found = await find_by_primary_id(ctx.pure, pure_type, id_source_of(rules), primary_id)
        uuid = None if found is None else str(found["uuid"])
    if uuid is not None:
        if policy == "delete":
            await ctx.pure.delete(pure_type, uuid)  # False: gone already, which is as good
        else:
            uuid = await _unlock(ctx.pure, pure_type, uuid)
    if policy == "delete" or uuid is None:
        return HandlerResult("deleted", pure_type, uuid, mapping=None, forget_mapping=True)
    row = MappingRow(
        event.source,
        event.kind,
        event.key,
        PURE,
        pure_type,
        uuid,
        known.target_version if known else None,
        payload_hash=b"",
        locked=False,
        changed_at=event.changed_at,
        origin=known.origin if known else "created",
    )
    return HandlerResult("deleted", pure_type, uuid, mapping=row)


async def _unlock(pure: PureClient, pure_type: str, uuid: str) -> str | None:
    """Unlock the content (already unlocked is fine); its uuid, or None when it is gone.

    Content merged in Pure answers under the survivor's uuid, found by a GET (301).
    """
    try:
        await pure.unlock(pure_type, uuid)
    except PermanentError as exc:
        if exc.status != 404:
            raise
        try:
            current = await pure.get(pure_type, uuid)
        except PermanentError as gone:
            if gone.status == 404:
                return None
            raise
        uuid = str(current["uuid"])
        await pure.unlock(pure_type, uuid)
    return uuid
