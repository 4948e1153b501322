"""Listener and dispatcher together: what the cursor rules promise about Pure objects."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest

from crisync.config.model import Config
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.feed import Feed
from crisync.listener.elements.sim import ElementsSimulator
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.handlers.test_dispatcher import drain
from tests.support.elements import cursor_of, listener_with, served, simulator

PUBLICATIONS = Feed("publications")


@pytest.fixture
async def context(config: Config, store: Store, session: aiohttp.ClientSession) -> PureContext:
    assert config.pure is not None
    return PureContext(store, PureClient(session, config.pure, telemetry=Telemetry()), config.pure)


def primary_ids(pure_sim: PureSimulator) -> Counter[str]:
    return Counter(
        identifier["value"]
        for obj in pure_sim.objects("research-outputs").values()
        for identifier in obj["identifiers"]
        if identifier["typeDiscriminator"] == "PrimaryId"
    )


async def test_a_kill_between_a_page_fetch_and_its_commit_repeats_the_page_only(
    context: PureContext,
    config: Config,
    store: Store,
    session: aiohttp.ClientSession,
    pure_sim: PureSimulator,
) -> None:
    slow = simulator(objects=30, seed=7)
    # Page 2 takes 0.3 s to answer: time enough to hold the store while it is on its way.
    slow.stall_next(0)
    slow.stall_next(0.3)
    publications = slow.object_ids("publication")
    async with served(slow) as url:
        telemetry = Telemetry()
        listener = listener_with(
            session, config, store, url=url, per_page=5, lookback=3600, telemetry=telemetry
        )
        sweep = asyncio.create_task(listener.sweep(PUBLICATIONS))
        while not any("after-id" in target for _, target in slow.requests):  # noqa: ASYNC110 - the simulator's request log is the probe
            await asyncio.sleep(0.001)
        # Page 2 is on its way: the sweep can receive it but not commit it.
        async with store.reading(), asyncio.timeout(5):
            while telemetry.requests[("elements", "GET", "200")] < 2:  # noqa: ASYNC110 - as above
                await asyncio.sleep(0.001)
            assert not sweep.done()
            sweep.cancel()  # the kill
            with pytest.raises(asyncio.CancelledError):
                await sweep
        page_two = (await cursor_of(store, "elements:publications")).next_url
        assert page_two is not None  # page 1 was committed, page 2 was not
        await drain(context)
        assert len(pure_sim.objects("research-outputs")) == 5

        # The restart: the sweep resumes at page 2, fetches it again, and goes on.
        restarted = listener_with(session, config, store, url=url, per_page=5, lookback=3600)
        slow.requests.clear()
        assert (await restarted.sweep(PUBLICATIONS)).complete
        assert page_two.endswith(slow.requests[0][1])
        await drain(context)
        # Objects of page 1 read again later are updated in Pure, not created twice.
        slow.advance(5)
        for publication in publications[:3]:
            slow.touch("publication", publication)
        assert (await restarted.sweep(PUBLICATIONS)).events_added == 3
        await drain(context)

    assert primary_ids(pure_sim) == Counter(f"elements:publication:{p}" for p in publications)


async def test_objects_sharing_a_stamp_at_a_page_boundary_all_reach_pure(
    context: PureContext,
    config: Config,
    store: Store,
    session: aiohttp.ClientSession,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
) -> None:
    listener = listener_with(session, config, store, per_page=2, lookback=0, deletions=False)
    await listener.sweep(PUBLICATIONS)
    await drain(context)
    elements_sim.advance(60)
    instant = elements_sim.now
    shared = elements_sim.object_ids("publication")[:5]
    for publication in shared[:4]:
        elements_sim.touch("publication", publication, title=f"Shared {publication}", at=instant)
    await listener.sweep(PUBLICATIONS)  # pages of 2: the shared stamp spans a boundary
    elements_sim.touch("publication", shared[4], title=f"Shared {shared[4]}", at=instant)
    await listener.sweep(PUBLICATIONS)  # since == the stamp: inclusive, so read
    await drain(context)
    titles = {obj["title"]["value"] for obj in pure_sim.objects("research-outputs").values()}
    assert {f"Shared {p}" for p in shared} <= titles
    assert len(pure_sim.objects("research-outputs")) == len(elements_sim.object_ids("publication"))
