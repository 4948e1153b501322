from __future__ import annotations

from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.sim import PureSimulator
from crisync.handlers.pure.state_guard import foreign_content
from crisync.state import mapping
from tests.handlers.pure.helpers import replicate_next
from tests.support.events import enqueue, user


async def test_a_pure_with_only_others_primary_ids_is_no_reason_to_refuse(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    """A real Pure is never empty: HR fills persons with PrimaryIds of the idSource crisync
    uses for users too, but not in crisync's source:kind:key form."""
    await enqueue(context.store, user("u1", "Hopper"))
    await replicate_next(context)
    (uuid,) = pure_sim.objects("persons")
    pure_sim.edit(
        "persons",
        uuid,
        {
            "identifiers": [
                {
                    "typeDiscriminator": "PrimaryId",
                    "idSource": "synchronisedUnifiedPerson",
                    "value": "HR-4711",
                }
            ]
        },
    )
    async with context.store.transaction() as conn:
        await conn.execute("DELETE FROM mapping")
    assert await foreign_content(context.store, context.pure, context.mappings) is None


async def test_crisync_s_primary_id_is_found_by_one_search_per_type_when_nothing_is_mapped(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, user("u1", "Hopper"))
    await replicate_next(context)
    pure_sim.request_counts.clear()
    assert await foreign_content(context.store, context.pure, context.mappings) is None
    assert sum(pure_sim.request_counts.values()) == 0  # the state maps something: not asked

    async with context.store.transaction() as conn:
        await conn.execute("DELETE FROM mapping")
        assert await mapping.count(conn) == 0
    refusal = await foreign_content(context.store, context.pure, context.mappings)
    assert refusal is not None
    assert refusal.startswith(
        "Pure holds persons crisync wrote (1 on the first page of a search, "
        "e.g. elements:user:u1 as "
    )
    assert "`crisync reconcile`" in refusal
    assert "--allow-empty-state" in refusal
    assert all(n == 1 for n in pure_sim.request_counts.values())
    assert {operation for _, operation in pure_sim.request_counts} == {"search"}
