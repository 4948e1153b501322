"""The Pure handler run on one event at a time, and what it leaves in Pure and the state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crisync.handlers.base import HandlerResult
from crisync.handlers.dispatcher import record_results
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.replicate import replicate_to_pure
from crisync.handlers.pure.types import CLASS_REQUIRES
from crisync.state import mapping
from crisync.state.mapping import MappingRow
from crisync.state.store import Store
from tests.support.events import claim_one

# What a research output needs, by the contract: an editor's own record has these too.
OUTPUT_REQUIRED = (
    "typeDiscriminator",
    "title",
    "type",
    "category",
    "language",
    "contributors",
    "managingOrganization",
    "publicationStatuses",
)


def editor_copy(stored: dict[str, Any]) -> dict[str, Any]:
    """A research output as an editor would enter the same one, without crisync's PrimaryId."""
    required = OUTPUT_REQUIRED + CLASS_REQUIRES.get(stored["typeDiscriminator"], ())
    return {name: stored[name] for name in required}


async def replicate_next(context: PureContext, *, skip: Iterable[str] = ()) -> HandlerResult:
    """Handle the next event and commit what the dispatcher would commit."""
    event = await claim_one(context.store, skip=skip)
    result = await replicate_to_pure(event, context)
    async with context.store.transaction() as conn:
        await record_results(conn, [(event, result)])
    return result


async def mapped(store: Store, kind: str, key: str) -> MappingRow | None:
    async with store.reading() as conn:
        return await mapping.get(conn, "elements", kind, key)
