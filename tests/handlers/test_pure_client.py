"""The Pure client against the simulator: paced requests, paged searches, deletes."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from crisync.config.model import Config
from crisync.errors import PermanentError
from crisync.handlers import pure_client
from crisync.handlers.base import HandlerContext
from crisync.handlers.pure_client import PureClient, find_by_primary_id
from crisync.sim.pure import PureSimulator
from crisync.telemetry import Telemetry
from tests.handlers.helpers import enqueue, publication, replicate_next
from tests.support.redirect import redirected_elsewhere


async def test_the_rate_limit_spaces_requests_beyond_a_burst(config: Config) -> None:
    assert config.pure is not None
    paced = config.pure.model_copy(update={"rate_limit": 20.0, "concurrency": 8})
    async with aiohttp.ClientSession() as session:
        client = PureClient(session, paced, telemetry=Telemetry())
        started = time.monotonic()
        await asyncio.gather(
            *(client.list_page("organizations", offset=0, size=1) for _ in range(25))
        )
        elapsed = time.monotonic() - started
    # 20 at once, then 20 a second: the other 5 take a quarter of a second at least.
    assert elapsed >= 0.2


async def test_a_primary_id_is_found_among_many_search_hits(
    context: HandlerContext, pure_sim: PureSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pure_client, "PRIMARY_ID_SEARCH_PAGE", 2)
    await enqueue(context.store, *(publication(str(n), f"Title {n}") for n in range(1, 8)))
    uuids = [(await replicate_next(context)).pure_uuid for _ in range(7)]
    pure_sim.request_counts.clear()

    found = await find_by_primary_id(
        context.pure, "research-outputs", "synchronisedResearchOutput", "elements:publication:4"
    )
    assert found is not None
    assert found["uuid"] == uuids[3]
    # Every output shares the words "elements" and "publication": none carries this value.
    missing = await find_by_primary_id(
        context.pure, "research-outputs", "synchronisedResearchOutput", "elements:publication:9"
    )
    assert missing is None
    assert pure_sim.request_counts[("research-outputs", "search")] == 1 + 4


async def test_a_redirect_to_another_host_is_refused_and_the_api_key_stays_home(
    config: Config, session: aiohttp.ClientSession
) -> None:
    assert config.pure is not None
    async with redirected_elsewhere() as (gateway, elsewhere):
        behind_gateway = config.pure.model_copy(update={"url": f"{gateway}/ws/api"})
        client = PureClient(session, behind_gateway, telemetry=Telemetry())
        with pytest.raises(PermanentError, match="another host"):
            await client.list_page("persons", offset=0, size=1)
    assert elsewhere == []
