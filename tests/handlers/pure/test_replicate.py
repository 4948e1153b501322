from __future__ import annotations

from dataclasses import replace

import pytest

from crisync.errors import PermanentError, RetriableError
from crisync.handlers.pure import client as pure_client
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.replicate import replicate_to_pure
from crisync.handlers.pure.sim import PureSimulator
from crisync.state import mapping
from tests.handlers.pure.helpers import editor_copy, mapped, replicate_next
from tests.support.events import claim_one, enqueue, publication, user


async def test_a_new_publication_is_created_with_its_primary_id_and_locked(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    result = await replicate_next(context)
    assert result.action == "created"
    assert result.target_type == "research-outputs"
    stored = pure_sim.objects("research-outputs")[result.target_uuid or ""]
    assert stored["title"] == {"value": "On crystals"}
    assert stored["identifiers"] == [
        {
            "typeDiscriminator": "PrimaryId",
            "idSource": "synchronisedResearchOutput",
            "value": "elements:publication:7",
        }
    ]
    assert pure_sim.is_locked("research-outputs", result.target_uuid or "")
    # Two writes, and the journal looked up in Pure's journal list.
    assert pure_sim.request_counts == {
        ("journals", "search"): 1,
        ("research-outputs", "create"): 1,
        ("research-outputs", "lock"): 1,
    }


async def test_a_user_becomes_a_person_with_the_person_id_source(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, user("5", "Lovelace"))
    result = await replicate_next(context)
    stored = pure_sim.objects("persons")[result.target_uuid or ""]
    assert stored["name"] == {"firstName": "Ada", "lastName": "Lovelace"}
    assert stored["identifiers"][0]["idSource"] == "synchronisedUnifiedPerson"


async def test_an_unchanged_payload_makes_no_pure_request(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    await replicate_next(context)
    pure_sim.request_counts.clear()
    await enqueue(context.store, publication("7", "On crystals", minute=5))
    result = await replicate_next(context)
    assert result.action == "unchanged"
    assert sum(pure_sim.request_counts.values()) == 0


async def test_a_change_is_one_write_of_the_changed_properties(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals", abstract="Facets."))
    created = await replicate_next(context)
    uuid = created.target_uuid or ""
    before = pure_sim.objects("research-outputs")[uuid]
    pure_sim.request_counts.clear()

    await enqueue(context.store, publication("7", "On larger crystals", minute=5))
    result = await replicate_next(context)
    assert result.action == "updated"
    assert pure_sim.request_counts == {("research-outputs", "update"): 1}
    stored = pure_sim.objects("research-outputs")[uuid]
    assert stored["title"] == {"value": "On larger crystals"}
    assert "abstract" not in stored  # an owned property now without a value is cleared
    unchanged = {"title", "abstract", "version", "modifiedDate"}
    assert {k: v for k, v in stored.items() if k not in unchanged} == {
        k: v for k, v in before.items() if k not in unchanged
    }
    async with context.store.reading() as conn:
        row = await mapping.get(conn, "elements", "publication", "7")
    assert row is not None
    assert row.target_version == stored["version"]

    # The next change again needs no read: the version stored is Pure's.
    pure_sim.request_counts.clear()
    await enqueue(context.store, publication("7", "On crystals", minute=9))
    assert (await replicate_next(context)).action == "updated"
    assert pure_sim.request_counts == {("research-outputs", "update"): 1}


async def test_a_change_after_an_edit_in_pure_is_read_merged_and_keeps_the_edit(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    created = await replicate_next(context)
    uuid = created.target_uuid or ""
    pure_sim.edit("research-outputs", uuid, {"bibliographicalNote": {"en_GB": "Added in Pure"}})
    pure_sim.request_counts.clear()

    await enqueue(context.store, publication("7", "On larger crystals", minute=5))
    result = await replicate_next(context)
    assert result.action == "updated"
    assert result.target_uuid == uuid
    stored = pure_sim.objects("research-outputs")[uuid]
    assert stored["title"] == {"value": "On larger crystals"}
    assert stored["bibliographicalNote"] == {"en_GB": "Added in Pure"}
    # The one write meets a 409 (Pure's version moved on); only then read and write again.
    assert pure_sim.request_counts == {
        ("research-outputs", "get"): 1,
        ("research-outputs", "update"): 2,
    }
    async with context.store.reading() as conn:
        row = await mapping.get(conn, "elements", "publication", "7")
    assert row is not None
    assert row.target_version == stored["version"]


async def test_an_update_keeps_the_identifiers_of_other_sources(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, user("5", "Lovelace"))
    uuid = (await replicate_next(context)).target_uuid or ""
    ours = pure_sim.objects("persons")[uuid]["identifiers"]
    hr = {
        "typeDiscriminator": "PrimaryId",
        "idSource": "synchronisedUnifiedPerson",
        "value": "E1042",
    }
    # HR's synchronisation, or a merge in Pure, gave the person a PrimaryId of its own.
    pure_sim.edit("persons", uuid, {"identifiers": [hr, *ours]})
    await enqueue(context.store, user("5", "King", 5))
    assert (await replicate_next(context)).action == "updated"
    stored = pure_sim.objects("persons")[uuid]
    assert stored["name"]["lastName"] == "King"
    assert stored["identifiers"] == [hr, *ours]
    async with context.store.reading() as conn:
        row = await mapping.get(conn, "elements", "user", "5")
    assert row is not None
    assert row.foreign_identifiers == (hr,)

    # Kept under the version guard: the next change is one write and loses no identifier.
    pure_sim.request_counts.clear()
    await enqueue(context.store, user("5", "Byron", 9))
    assert (await replicate_next(context)).action == "updated"
    assert pure_sim.request_counts == {("persons", "update"): 1}
    assert pure_sim.objects("persons")[uuid]["identifiers"] == [hr, *ours]


async def test_a_version_conflict_is_read_again_and_retried(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    created = await replicate_next(context)
    pure_sim.fail_next(409, content_type="research-outputs")
    await enqueue(context.store, publication("7", "Changed", minute=5))
    result = await replicate_next(context)
    assert result.action == "updated"
    assert pure_sim.objects("research-outputs")[created.target_uuid or ""]["title"] == {
        "value": "Changed"
    }


async def test_a_conflict_with_crisyncs_own_lost_write_writes_no_more(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    created = await replicate_next(context)
    # The write lands, and its answer is a 409: a gateway sent it twice, the second was stale.
    pure_sim.fail_next(409, content_type="research-outputs", after_write=True)
    await enqueue(context.store, publication("7", "Changed", minute=5))
    pure_sim.request_counts.clear()
    result = await replicate_next(context)
    assert result.action == "updated"
    stored = pure_sim.objects("research-outputs")[created.target_uuid or ""]
    assert stored["title"] == {"value": "Changed"}
    # Write, read: Pure holds the change, nothing more to write.
    assert pure_sim.request_counts == {
        ("research-outputs", "get"): 1,
        ("research-outputs", "update"): 1,
    }
    async with context.store.reading() as conn:
        row = await mapping.get(conn, "elements", "publication", "7")
    assert row is not None
    assert row.target_version == stored["version"]


async def test_a_create_whose_answer_was_lost_is_found_at_once_not_repeated(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    # Pure stores the object, then the gateway times out: crisync never sees the uuid.
    pure_sim.fail_next(504, content_type="research-outputs", after_write=True)
    result = await replicate_next(context)
    assert result.action == "created"
    (uuid,) = pure_sim.objects("research-outputs")
    assert result.target_uuid == uuid
    assert pure_sim.is_locked("research-outputs", uuid)
    assert pure_sim.request_counts[("research-outputs", "create")] == 1
    assert pure_sim.request_counts[("research-outputs", "search")] == 1


async def test_a_create_that_failed_before_the_write_is_searched_for_then_made(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    pure_sim.fail_next(503, content_type="research-outputs")
    result = await replicate_next(context)
    assert result.action == "created"
    assert list(pure_sim.objects("research-outputs")) == [result.target_uuid]
    assert pure_sim.request_counts[("research-outputs", "create")] == 2
    assert pure_sim.request_counts[("research-outputs", "search")] == 1


async def test_a_create_whose_answer_was_lost_is_found_by_a_later_attempt(
    context: PureContext, pure_sim: PureSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pure_client, "REQUEST_ATTEMPTS", 1)  # the attempt ends at the failure
    await enqueue(context.store, publication("7", "On crystals"))
    pure_sim.fail_next(504, content_type="research-outputs", after_write=True)
    with pytest.raises(RetriableError):
        await replicate_to_pure(await claim_one(context.store), context)
    assert len(pure_sim.objects("research-outputs")) == 1

    result = await replicate_next(context)
    assert result.action == "created"
    (uuid,) = pure_sim.objects("research-outputs")
    assert result.target_uuid == uuid
    assert pure_sim.is_locked("research-outputs", uuid)
    assert pure_sim.request_counts[("research-outputs", "create")] == 1
    assert pure_sim.request_counts[("research-outputs", "search")] == 1


async def test_a_new_object_costs_no_search(context: PureContext, pure_sim: PureSimulator) -> None:
    await enqueue(context.store, publication("7", "On crystals"), publication("8", "On salts"))
    await replicate_next(context)
    await replicate_next(context)
    assert pure_sim.request_counts[("research-outputs", "search")] == 0
    async with (
        context.store.reading() as conn,
        conn.execute("SELECT COUNT(*) FROM create_intents") as rows,
    ):
        assert (await rows.fetchone())[0] == 0


async def test_request_economy_new_two_changed_two_unchanged_none(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    """Per object: a new one costs create + lock, a changed one a write, else nothing."""
    authors, related = [("Lovelace", "A"), ("Hopper", "G")], ["1", "2"]
    await enqueue(
        context.store,
        user("1", "Lovelace"),
        user("2", "Hopper", first_name="Grace"),
        *(
            publication(str(n), f"Title {n}", authors=authors, related=related)
            for n in range(10, 15)
        ),
    )
    for _ in range(7):
        await replicate_next(context)
    assert pure_sim.request_counts == {
        ("journals", "search"): 1,  # once for all five: the journal is remembered
        ("persons", "create"): 2,
        ("persons", "lock"): 2,
        ("research-outputs", "create"): 5,
        ("research-outputs", "lock"): 5,
    }
    persons = set(pure_sim.objects("persons"))
    for output in pure_sim.objects("research-outputs").values():
        assert {c["person"]["uuid"] for c in output["contributors"]} == persons
    pure_sim.request_counts.clear()

    changed = [
        publication(str(n), f"New title {n}", 5, authors=authors, related=related)
        for n in (10, 11, 12)
    ]
    unchanged = [
        publication(str(n), f"Title {n}", 5, authors=authors, related=related) for n in (13, 14)
    ]
    await enqueue(context.store, *changed, *unchanged, user("1", "Lovelace", 5))
    actions = [(await replicate_next(context)).action for _ in range(6)]
    assert sorted(actions) == ["unchanged"] * 3 + ["updated"] * 3
    assert pure_sim.request_counts == {("research-outputs", "update"): 3}


async def test_content_merged_in_pure_is_followed_to_the_survivor_and_stored(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    merged = (await replicate_next(context)).target_uuid or ""
    # An editor's own record of the same output, into which Pure merges crisync's.
    stored = pure_sim.objects("research-outputs")[merged]
    survivor = await context.pure.create("research-outputs", editor_copy(stored))
    pure_sim.merge("research-outputs", merged, survivor["uuid"])

    await enqueue(context.store, publication("7", "On larger crystals", minute=5))
    result = await replicate_next(context)
    assert result.action == "updated"
    assert result.target_uuid == survivor["uuid"]
    now = pure_sim.objects("research-outputs")[survivor["uuid"]]
    assert now["title"] == {"value": "On larger crystals"}
    assert now["identifiers"][0]["value"] == "elements:publication:7"
    assert pure_sim.is_locked("research-outputs", survivor["uuid"])
    row = await mapped(context.store, "publication", "7")
    assert row is not None
    assert row.target_uuid == survivor["uuid"]


async def test_content_deleted_in_pure_is_created_again(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    first = (await replicate_next(context)).target_uuid or ""
    assert await context.pure.delete("research-outputs", first)
    assert not await context.pure.delete("research-outputs", first)  # gone is gone

    await enqueue(context.store, publication("7", "On larger crystals", minute=5))
    result = await replicate_next(context)
    assert result.action == "created"
    (again,) = pure_sim.objects("research-outputs")
    assert result.target_uuid == again != first
    assert pure_sim.is_locked("research-outputs", again)


async def test_already_locked_counts_as_locked(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    await replicate_next(context)
    row = await mapped(context.store, "publication", "7")
    assert row is not None
    async with context.store.transaction() as conn:  # the mapping forgot the lock
        await mapping.put(conn, replace(row, locked=False))
    pure_sim.request_counts.clear()

    await enqueue(context.store, publication("7", "Changed", minute=5))
    result = await replicate_next(context)
    assert result.action == "updated"
    assert pure_sim.request_counts[("research-outputs", "lock")] == 1  # answered 409
    row = await mapped(context.store, "publication", "7")
    assert row is not None
    assert row.locked


async def test_an_owned_property_without_a_value_is_cleared_in_pure(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals", abstract="Long ago"))
    uuid = (await replicate_next(context)).target_uuid or ""
    assert pure_sim.objects("research-outputs")[uuid]["abstract"] == {"en_GB": "Long ago"}
    await enqueue(context.store, publication("7", "On crystals", minute=5))
    assert (await replicate_next(context)).action == "updated"
    assert "abstract" not in pure_sim.objects("research-outputs")[uuid]


async def test_a_mapping_moved_to_another_pure_type_is_refused(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, user("5", "Lovelace"))
    await replicate_next(context)
    elements = context.mappings.sources["elements"]
    user_rules = elements["user"].model_copy(update={"type": "external-persons"})
    sources = {**context.mappings.sources, "elements": {**elements, "user": user_rules}}
    moved = context.mappings.model_copy(update={"sources": sources})
    await enqueue(context.store, user("5", "Lovelace", 5))
    with pytest.raises(PermanentError, match="mapping now says external-persons"):
        await replicate_to_pure(await claim_one(context.store), replace(context, mappings=moved))
    assert len(pure_sim.objects("external-persons")) == 0


async def test_a_missing_match_key_is_filled_in_without_asking_pure(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, user("5", "Lovelace"))
    await replicate_next(context)
    row = await mapped(context.store, "user", "5")
    assert row is not None
    assert row.match_key == "lovelace|a"
    async with context.store.transaction() as conn:  # as a row from before match keys
        await mapping.put(conn, replace(row, match_key=None))
    pure_sim.request_counts.clear()

    await enqueue(context.store, user("5", "Lovelace", 5))
    assert (await replicate_next(context)).action == "unchanged"
    assert sum(pure_sim.request_counts.values()) == 0
    row = await mapped(context.store, "user", "5")
    assert row is not None
    assert row.match_key == "lovelace|a"


async def test_a_404_on_the_update_is_no_proof_the_content_is_gone(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("7", "On crystals"))
    uuid = (await replicate_next(context)).target_uuid
    # An access definition can hide content for a moment: found by its PrimaryId, not copied.
    pure_sim.fail_next(404, content_type="research-outputs", operation="update")
    pure_sim.fail_next(404, content_type="research-outputs", operation="get")
    await enqueue(context.store, publication("7", "On larger crystals", minute=5))
    result = await replicate_next(context)
    assert (result.action, result.target_uuid) == ("updated", uuid)
    assert len(pure_sim.objects("research-outputs")) == 1
    assert pure_sim.request_counts[("research-outputs", "search")] >= 1
