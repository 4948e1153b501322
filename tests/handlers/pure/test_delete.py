"""Deletions in the source: unlock (the default), delete or ignore, per mapping."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.sim import PureSimulator
from crisync.mapping.rules import DeletePolicy
from crisync.state import mapping
from tests.handlers.pure.helpers import mapped, replicate_next
from tests.support.events import deletion, enqueue, publication


def with_policy(context: PureContext, policy: DeletePolicy) -> PureContext:
    elements = context.mappings.sources["elements"]
    rules = elements["publication"].model_copy(update={"on_delete": policy})
    sources = {**context.mappings.sources, "elements": {**elements, "publication": rules}}
    mappings = context.mappings.model_copy(update={"sources": sources})
    return replace(context, mappings=mappings)


async def created(context: PureContext, key: str = "7") -> str:
    await enqueue(context.store, publication(key, "On crystals"))
    return (await replicate_next(context)).target_uuid or ""


async def test_by_default_the_content_is_unlocked_and_stays_mapped(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    uuid = await created(context)
    pure_sim.request_counts.clear()
    await enqueue(context.store, deletion("publication", "7", minute=5))
    result = await replicate_next(context)
    assert (result.action, result.target_uuid) == ("deleted", uuid)
    assert uuid in pure_sim.objects("research-outputs")
    assert not pure_sim.is_locked("research-outputs", uuid)
    assert pure_sim.request_counts == {("research-outputs", "unlock"): 1}
    row = await mapped(context.store, "publication", "7")
    assert row is not None
    assert (row.target_uuid, row.locked, row.payload_hash) == (uuid, False, b"")

    # The object comes back in the source: the same content is written and locked again.
    await enqueue(context.store, publication("7", "On crystals", minute=9))
    result = await replicate_next(context)
    assert (result.action, result.target_uuid) == ("updated", uuid)
    assert list(pure_sim.objects("research-outputs")) == [uuid]
    assert pure_sim.is_locked("research-outputs", uuid)


async def test_the_delete_policy_deletes_the_content_and_the_mapping(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    ctx = with_policy(context, "delete")
    uuid = await created(ctx)
    await enqueue(ctx.store, deletion("publication", "7", minute=5))
    result = await replicate_next(ctx)
    assert (result.action, result.target_uuid) == ("deleted", uuid)
    assert pure_sim.objects("research-outputs") == {}
    assert await mapped(ctx.store, "publication", "7") is None

    # A repeated deletion finds nothing, in the mapping or in Pure, and is done.
    pure_sim.request_counts.clear()
    await enqueue(ctx.store, deletion("publication", "7", minute=6))
    result = await replicate_next(ctx)
    assert (result.action, result.target_uuid) == ("deleted", None)
    assert pure_sim.request_counts == {("research-outputs", "search"): 1}


async def test_the_ignore_policy_leaves_pure_alone(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    ctx = with_policy(context, "ignore")
    uuid = await created(ctx)
    before = await mapped(ctx.store, "publication", "7")
    pure_sim.request_counts.clear()
    await enqueue(ctx.store, deletion("publication", "7", minute=5))
    result = await replicate_next(ctx)
    assert (result.action, result.target_uuid) == ("deleted", uuid)
    assert sum(pure_sim.request_counts.values()) == 0
    assert pure_sim.is_locked("research-outputs", uuid)
    assert await mapped(ctx.store, "publication", "7") == before


@pytest.mark.parametrize("policy", ["unlock", "delete"])
async def test_content_the_mapping_lost_is_found_by_its_primary_id(
    context: PureContext, pure_sim: PureSimulator, policy: DeletePolicy
) -> None:
    ctx = with_policy(context, policy)
    uuid = await created(ctx)
    async with ctx.store.transaction() as conn:
        await mapping.delete(conn, "elements", "publication", "7")
    await enqueue(ctx.store, deletion("publication", "7", minute=5))
    result = await replicate_next(ctx)
    assert (result.action, result.target_uuid) == ("deleted", uuid)
    if policy == "delete":
        assert uuid not in pure_sim.objects("research-outputs")
    else:
        assert not pure_sim.is_locked("research-outputs", uuid)


async def test_unlocking_content_merged_in_pure_unlocks_the_survivor(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    merged = await created(context, "7")
    survivor = await created(context, "8")
    pure_sim.merge("research-outputs", merged, survivor)
    await enqueue(context.store, deletion("publication", "7", minute=5))
    result = await replicate_next(context)
    assert (result.action, result.target_uuid) == ("deleted", survivor)
    assert not pure_sim.is_locked("research-outputs", survivor)
