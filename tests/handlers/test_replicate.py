from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from crisync.config.model import Config
from crisync.errors import RetriableError
from crisync.handlers.base import HandlerContext, HandlerResult
from crisync.handlers.dispatcher import record_result
from crisync.handlers.pure_client import PureClient
from crisync.handlers.replicate import replicate_to_pure
from crisync.sim.pure import PureSimulator
from crisync.state import mapping
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.handlers.helpers import claim_one, enqueue, publication, user


@pytest.fixture
async def context(config: Config) -> AsyncIterator[HandlerContext]:
    assert config.pure is not None
    async with Store.open(config.state.path) as store, aiohttp.ClientSession() as session:
        yield HandlerContext(
            store, PureClient(session, config.pure, telemetry=Telemetry()), config.pure
        )


async def replicate_next(context: HandlerContext) -> HandlerResult:
    """Handle the next event and commit what the dispatcher would commit."""
    event = await claim_one(context.store)
    result = await replicate_to_pure(event, context)
    async with context.store.transaction() as conn:
        await record_result(conn, event, result)
    return result


async def test_a_new_publication_is_created_with_its_primary_id_and_locked(
    context: HandlerContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    result = await replicate_next(context)
    assert result.action == "created"
    assert result.pure_type == "research-outputs"
    stored = pure_sim.objects("research-outputs")[result.pure_uuid or ""]
    assert stored["title"] == {"value": "On crystals"}
    assert stored["identifiers"] == [
        {
            "typeDiscriminator": "PrimaryId",
            "idSource": "synchronisedResearchOutput",
            "value": "elements:publication:7",
        }
    ]
    assert pure_sim.is_locked("research-outputs", result.pure_uuid or "")
    assert pure_sim.request_counts == {
        ("research-outputs", "create"): 1,
        ("research-outputs", "lock"): 1,
    }


async def test_a_user_becomes_a_person_with_the_person_id_source(
    context: HandlerContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, user("5", "Lovelace"))
    result = await replicate_next(context)
    stored = pure_sim.objects("persons")[result.pure_uuid or ""]
    assert stored["name"] == {"firstName": "Ada", "lastName": "Lovelace"}
    assert stored["identifiers"][0]["idSource"] == "synchronisedUnifiedPerson"


async def test_an_unchanged_payload_makes_no_pure_request(
    context: HandlerContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    await replicate_next(context)
    pure_sim.request_counts.clear()
    await enqueue(context.store, publication("7", "On crystals", minute=5))
    result = await replicate_next(context)
    assert result.action == "unchanged"
    assert sum(pure_sim.request_counts.values()) == 0


async def test_a_change_is_a_read_and_a_write_that_keeps_edits_made_in_pure(
    context: HandlerContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    created = await replicate_next(context)
    uuid = created.pure_uuid or ""
    pure_sim.edit("research-outputs", uuid, {"bibliographicalNote": {"en_GB": "Added in Pure"}})
    pure_sim.request_counts.clear()

    await enqueue(context.store, publication("7", "On larger crystals", minute=5))
    result = await replicate_next(context)
    assert result.action == "updated"
    assert result.pure_uuid == uuid
    stored = pure_sim.objects("research-outputs")[uuid]
    assert stored["title"] == {"value": "On larger crystals"}
    assert stored["bibliographicalNote"] == {"en_GB": "Added in Pure"}
    assert pure_sim.request_counts == {
        ("research-outputs", "get"): 1,
        ("research-outputs", "update"): 1,
    }
    async with context.store.reading() as conn:
        row = await mapping.get(conn, "elements", "publication", "7")
    assert row is not None
    assert row.pure_version == stored["version"]


async def test_a_version_conflict_is_read_again_and_retried(
    context: HandlerContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    created = await replicate_next(context)
    pure_sim.fail_next(409, content_type="research-outputs")
    await enqueue(context.store, publication("7", "Changed", minute=5))
    result = await replicate_next(context)
    assert result.action == "updated"
    assert pure_sim.objects("research-outputs")[created.pure_uuid or ""]["title"] == {
        "value": "Changed"
    }


async def test_a_create_whose_answer_was_lost_is_found_not_repeated(
    context: HandlerContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    # Pure stores the object, then the gateway times out: crisync never sees the uuid.
    pure_sim.fail_next(504, content_type="research-outputs", after_write=True)
    with pytest.raises(RetriableError):
        await replicate_to_pure(await claim_one(context.store), context)
    assert len(pure_sim.objects("research-outputs")) == 1

    result = await replicate_next(context)
    assert result.action == "created"
    (uuid,) = pure_sim.objects("research-outputs")
    assert result.pure_uuid == uuid
    assert pure_sim.is_locked("research-outputs", uuid)
    assert pure_sim.request_counts[("research-outputs", "create")] == 1
    assert pure_sim.request_counts[("research-outputs", "search")] == 1


async def test_a_new_object_costs_no_search(
    context: HandlerContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"), publication("8", "On salts"))
    await replicate_next(context)
    await replicate_next(context)
    assert pure_sim.request_counts[("research-outputs", "search")] == 0
    async with (
        context.store.reading() as conn,
        conn.execute("SELECT COUNT(*) FROM create_intents") as rows,
    ):
        assert (await rows.fetchone())[0] == 0
