"""The planning client: Pure's answers to writes, computed as Pure would, never sent."""

from __future__ import annotations

import aiohttp
import pytest

from crisync.handlers.pure.client import PureConflictError
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.planning import PlanningPureClient
from crisync.handlers.pure.sim import PureSimulator
from crisync.telemetry import Telemetry
from tests.handlers.pure.helpers import replicate_next
from tests.support.events import enqueue, publication


async def test_a_planned_update_is_a_merge_patch_and_a_stale_version_conflicts(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals", abstract="Facets."))
    uuid = (await replicate_next(context)).target_uuid or ""
    stored = pure_sim.objects("research-outputs")[uuid]
    async with aiohttp.ClientSession() as session:
        planning = PlanningPureClient(session, context.pure_config, telemetry=Telemetry())
        with pytest.raises(PureConflictError):
            await planning.update("research-outputs", uuid, {"version": "stale", "title": None})
        patch = {"version": stored["version"], "title": {"value": "T"}, "abstract": None}
        after = await planning.update("research-outputs", uuid, patch)

    assert after["title"] == {"value": "T"}
    assert "abstract" not in after
    assert after["contributors"] == stored["contributors"]  # absent from the patch: kept
    assert pure_sim.objects("research-outputs")[uuid] == stored  # nothing sent
    planned = planning.planned("research-outputs", uuid)
    assert planned is not None
    assert planned.before is not None
    assert planned.after is not None
    assert (planned.before["title"], planned.after["title"]) == (stored["title"], {"value": "T"})
