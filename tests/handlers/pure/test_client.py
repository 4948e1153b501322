"""The Pure client against the simulator: paced requests, paged searches, deletes."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from crisync.config.model import Config
from crisync.errors import PermanentError, RetriableError
from crisync.handlers.pure import client as pure_client
from crisync.handlers.pure.client import REQUEST_ATTEMPTS, PureClient, find_by_primary_id
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.sim import PureSimulator
from crisync.telemetry import Telemetry
from tests.handlers.pure.helpers import replicate_next
from tests.support.events import enqueue, publication
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
    context: PureContext, pure_sim: PureSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pure_client, "PRIMARY_ID_SEARCH_PAGE", 2)
    monkeypatch.setattr(pure_client, "PRIMARY_ID_SEARCH_MORE", 3)
    await enqueue(context.store, *(publication(str(n), f"Title {n}") for n in range(1, 8)))
    uuids = [(await replicate_next(context)).target_uuid for _ in range(7)]
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
    # Found on the first page; proved absent by reading 2, then 3 and 3 hits of 7.
    assert pure_sim.request_counts[("research-outputs", "search")] == 1 + 3


async def test_a_page_listed_for_a_scan_keeps_only_what_the_scan_reads(
    context: PureContext,
) -> None:
    await enqueue(context.store, publication("1", "Crystals", doi="10.1/x"))
    uuid = (await replicate_next(context)).target_uuid
    page = await context.pure.list_page(
        "research-outputs", offset=0, size=10, keep=frozenset({"electronicVersions", "doi"})
    )
    [item] = page.items
    # The object and the electronic version within it keep their uuid and what was asked;
    # the title and every other property are gone. The page itself is read whole.
    assert (page.count, item["uuid"], set(item)) == (1, uuid, {"uuid", "electronicVersions"})
    assert [version.get("doi") for version in item["electronicVersions"]] == ["10.1/x"]
    whole = await context.pure.list_page("research-outputs", offset=0, size=10)
    assert "title" in whole.items[0]


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


EXTERNAL_PERSON = {"name": {"firstName": "Ada", "lastName": "Lovelace"}}


async def test_a_transient_failure_is_replayed_within_the_call(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    organization = pure_sim.organization_uuids[0]
    pure_sim.fail_next(503, count=REQUEST_ATTEMPTS - 1)
    found = await context.pure.get("organizations", organization)
    assert found["uuid"] == organization
    assert pure_sim.request_counts[("organizations", "get")] == REQUEST_ATTEMPTS


async def test_a_failure_that_outlasts_the_replays_is_left_to_the_dispatcher(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    pure_sim.fail_next(500, count=REQUEST_ATTEMPTS)
    with pytest.raises(RetriableError):
        await context.pure.get("organizations", pure_sim.organization_uuids[0])
    assert pure_sim.request_counts[("organizations", "get")] == REQUEST_ATTEMPTS


async def test_a_create_is_never_replayed(context: PureContext, pure_sim: PureSimulator) -> None:
    # Its answer may be lost after Pure stored it: a replay would store a second one.
    pure_sim.fail_next(504, after_write=True)
    with pytest.raises(RetriableError):
        await context.pure.create("external-persons", EXTERNAL_PERSON)
    assert pure_sim.request_counts[("external-persons", "create")] == 1
    assert len(pure_sim.objects("external-persons")) == 1


async def test_a_lock_whose_answer_was_lost_is_replayed_and_found_done(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    created = await context.pure.create("external-persons", EXTERNAL_PERSON)
    pure_sim.fail_next(504, after_write=True)
    # The replay meets the contract's 409 "already locked", an answer and no failure.
    assert await context.pure.lock("external-persons", created["uuid"]) is False
    assert pure_sim.is_locked("external-persons", created["uuid"])
    assert pure_sim.request_counts[("external-persons", "lock")] == 2
