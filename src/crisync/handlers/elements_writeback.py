"""The write-back handler: the Pure uuid of a newly created object, written into Elements.

The Pure handler queues a write-back as a follow-up of its create, in the transaction
that records the create, so a crash between the two loses neither.
"""

from __future__ import annotations

from datetime import datetime

from crisync.errors import PermanentError
from crisync.handlers.base import HandlerContext, HandlerResult
from crisync.state.inbox import ChangeEvent, InboxEvent

WRITEBACK_SOURCE = "elements-writeback"


def writeback_follow_ups(
    event: InboxEvent, ctx: HandlerContext, pure_type: str, pure_uuid: str
) -> tuple[ChangeEvent, ...]:
    """The write-back a create of this Elements object calls for, if one is configured."""
    writeback = ctx.elements_writeback
    if event.source != "elements" or writeback is None or not writeback.wanted(event.kind):
        return ()
    return (
        ChangeEvent(
            f"{WRITEBACK_SOURCE}:{event.kind}",
            WRITEBACK_SOURCE,
            event.kind,
            event.key,
            "upsert",
            datetime.fromisoformat(event.changed_at),
            {
                "id": event.key,
                "category": event.kind,
                "attributes": event.payload.get("attributes") or {},
                "records": event.payload.get("records") or [],
                "pure": {"type": pure_type, "uuid": pure_uuid},
            },
        ),
    )


async def write_back_to_elements(event: InboxEvent, ctx: HandlerContext) -> HandlerResult:
    if ctx.elements_writeback is None:
        raise PermanentError("write-back is not configured", api="crisync")
    pure = event.payload["pure"]
    written = await ctx.elements_writeback.write(event.kind, event.payload, pure["uuid"])
    return HandlerResult(
        "updated" if written else "unchanged", pure["type"], pure["uuid"], mapping=None
    )
