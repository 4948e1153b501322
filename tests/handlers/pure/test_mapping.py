"""The mapping engine through the handler: lookups, references, contributors, configuration."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from crisync.errors import PermanentError
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.mapping import ReferenceNotReplicatedError
from crisync.handlers.pure.replicate import replicate_to_pure
from crisync.handlers.pure.sim import PureSimulator
from crisync.mapping.rules import MappingsConfig
from crisync.state import inbox
from crisync.state.inbox import ChangeEvent
from crisync.state.store import utc_now
from tests.handlers.pure.helpers import replicate_next
from tests.support.events import authorship, claim_one, enqueue, publication, user

RESEARCH_OUTPUT_TYPES = "/dk/atira/pure/researchoutput/researchoutputtypes"


def output_of(pure_sim: PureSimulator, uuid: str | None) -> dict[str, Any]:
    return pure_sim.objects("research-outputs")[uuid or ""]


async def test_lookups_pick_the_class_type_language_and_status(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store,
        publication(
            "7",
            "On crystals",
            publication_type="conference",
            language="DE",
            **{"publication-status": "In Press"},
        ),
        publication("8", "On salts", publication_type="dataset", language="xx"),
    )
    conference = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    assert conference["typeDiscriminator"] == "ContributionToConference"
    assert conference["type"] == {"uri": f"{RESEARCH_OUTPUT_TYPES}/contributiontoconference/paper"}
    assert conference["language"] == {"uri": "/dk/atira/pure/core/languages/de_DE"}
    assert conference["publicationStatuses"] == [
        {
            "publicationStatus": {"uri": "/dk/atira/pure/researchoutput/status/inpress"},
            "publicationDate": {"year": 2025, "month": 6},
        }
    ]
    assert conference["managingOrganization"] == {
        "systemName": "Organization",
        "uuid": context.pure_config.managing_organization,
    }
    other = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    assert other["typeDiscriminator"] == "OtherContribution"
    assert other["type"] == {"uri": f"{RESEARCH_OUTPUT_TYPES}/othercontribution/other"}
    assert other["language"] == {"uri": "/dk/atira/pure/core/languages/und"}


async def test_authors_related_to_replicated_users_are_linked_the_others_are_external(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store,
        user("1", "Lovelace"),
        publication(
            "7", "On engines", authors=[("Lovelace", "A."), ("Babbage", "C")], related=["1"]
        ),
        publication("8", "On tables", 1, authors=[("BABBAGE", "c")]),
    )
    ada = (await replicate_next(context)).target_uuid
    first = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    (charles,) = pure_sim.objects("external-persons")
    assert first["contributors"] == [
        {
            "typeDiscriminator": "InternalContributorAssociation",
            "name": {"firstName": "A.", "lastName": "Lovelace"},
            "role": {"uri": "/dk/atira/pure/researchoutput/roles/contributor/author"},
            "person": {"systemName": "Person", "uuid": ada},
        },
        {
            "typeDiscriminator": "ExternalContributorAssociation",
            "name": {"firstName": "C", "lastName": "Babbage"},
            "role": {"uri": "/dk/atira/pure/researchoutput/roles/contributor/author"},
            "externalPerson": {"systemName": "ExternalPerson", "uuid": charles},
        },
    ]
    assert pure_sim.objects("external-persons")[charles]["identifiers"][0] == {
        "typeDiscriminator": "PrimaryId",
        "idSource": "synchronisedUnifiedExternalPerson",
        "value": "crisync:external-person:babbage|c",
    }
    # The same name in another output is the same external person, with no Pure request.
    pure_sim.request_counts.clear()
    second = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    assert second["contributors"][0]["externalPerson"]["uuid"] == charles
    assert pure_sim.request_counts[("external-persons", "search")] == 0
    assert pure_sim.request_counts[("external-persons", "create")] == 0


async def test_an_external_person_already_in_pure_is_reused_by_name(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    editors = await context.pure.create(
        "external-persons", {"name": {"firstName": "C", "lastName": "Babbage"}}
    )
    await context.pure.create(
        "external-persons", {"name": {"firstName": "Charles", "lastName": "Babbage"}}
    )
    await enqueue(context.store, publication("7", "On engines", authors=[("Babbage", "C")]))
    output = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    assert output["contributors"][0]["externalPerson"]["uuid"] == editors["uuid"]
    assert len(pure_sim.objects("external-persons")) == 2


async def test_an_external_person_whose_create_answer_was_lost_is_found_not_repeated(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    pure_sim.fail_next(504, content_type="external-persons", after_write=True)
    await enqueue(context.store, publication("7", "On engines", authors=[("Babbage", "C")]))
    output = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    (charles,) = pure_sim.objects("external-persons")
    assert output["contributors"][0]["externalPerson"]["uuid"] == charles
    assert pure_sim.request_counts[("external-persons", "create")] == 1
    assert pure_sim.request_counts[("external-persons", "search")] == 2


async def test_namesakes_among_the_users_are_not_guessed_between(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store,
        user("1", "Smith", first_name="John"),
        user("2", "Smith", first_name="Jane"),
        publication("7", "On names", authors=[("Smith", "J")]),
    )
    for _ in range(2):
        await replicate_next(context)
    output = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    (contributor,) = output["contributors"]
    assert contributor["typeDiscriminator"] == "ExternalContributorAssociation"


async def test_concurrent_outputs_share_one_new_external_person(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store,
        *(publication(str(n), f"Part {n}", authors=[("Babbage", "C")]) for n in range(5)),
    )
    async with context.store.reading() as conn:
        events = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=5)
    await asyncio.gather(*(replicate_to_pure(event, context) for event in events))
    assert len(pure_sim.objects("external-persons")) == 1
    assert pure_sim.request_counts[("external-persons", "create")] == 1


async def test_a_missing_required_value_is_a_permanent_error_naming_it(
    context: PureContext,
) -> None:
    await enqueue(context.store, user("5", ""))
    with pytest.raises(PermanentError, match=r"elements user 5: no value for name\.lastName"):
        await replicate_to_pure(await claim_one(context.store), context)


async def test_a_reference_to_content_not_replicated_yet_waits(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    publication_rules = context.mappings.sources["elements"]["publication"].model_dump()
    mappings = MappingsConfig.model_validate(
        {
            "elements": {
                "publication": {
                    **publication_rules,
                    "properties": {
                        **publication_rules["properties"],
                        "managingOrganization": {
                            "reference": "org-structure",
                            "from": "fields.owner",
                            "fallback": "managing-organization",
                        },
                    },
                }
            }
        }
    )
    ctx = replace(context, mappings=mappings)
    department = ChangeEvent(
        "elements:org-structures",
        "elements",
        "org-structure",
        "42",
        "upsert",
        datetime(2026, 11, 1, 11, tzinfo=UTC),
        {"id": "42", "category": "org-structure", "fields": {"name": "Physics"}},
    )
    await enqueue(ctx.store, publication("7", "On crystals", owner="42"))
    with pytest.raises(ReferenceNotReplicatedError, match="org-structure 42, not in Pure yet") as e:
        await replicate_to_pure(await claim_one(ctx.store), ctx)
    assert e.value.retriable
    assert len(pure_sim.objects("research-outputs")) == 0

    await enqueue(ctx.store, department)
    organisation = (await replicate_next(ctx, skip=["elements/publication/7"])).target_uuid
    assert pure_sim.objects("organizations")[organisation or ""]["name"] == {"en_GB": "Physics"}
    output = output_of(pure_sim, (await replicate_next(ctx)).target_uuid)
    assert output["managingOrganization"] == {"systemName": "Organization", "uuid": organisation}


UNICAT_MAPPINGS = {
    "unicat": {
        "department": {
            "pure_type": "organizations",
            "properties": {
                "name.en_GB": {"from": "fields.name", "required": True},
                "type.uri": {
                    "value": "/dk/atira/pure/organisation/organisationtypes/organisation/department"
                },
                "lifecycle.startDate": {"from": "fields.founded|date", "required": True},
            },
        },
        "person": {
            "pure_type": "persons",
            "properties": {
                "name.firstName": {"from": "fields.first"},
                "name.lastName": {"from": "fields.last", "required": True},
            },
        },
        "record": {
            "pure_type": "research-outputs",
            "on_delete": "delete",
            "properties": {
                "typeDiscriminator": {"value": "OtherContribution"},
                "title.value": {"from": "fields.title", "required": True},
                "type.uri": {"value": f"{RESEARCH_OUTPUT_TYPES}/othercontribution/other"},
                "category.uri": {"value": "/dk/atira/pure/researchoutput/category/research"},
                "language.uri": {"value": "/dk/atira/pure/core/languages/und"},
                "publicationStatuses.0.publicationStatus.uri": {
                    "value": "/dk/atira/pure/researchoutput/status/published"
                },
                "managingOrganization": {
                    "reference": "department",
                    "from": "fields.department",
                    "fallback": "managing-organization",
                },
                "contributors": {
                    "persons": {
                        "from": "fields.authors",
                        "role": "/dk/atira/pure/researchoutput/roles/contributor/author",
                        "kind": "person",
                        "key": ["gid"],
                        "last_name": ["last"],
                        "first_name": ["first"],
                    }
                },
            },
        },
    }
}


def unicat(kind: str, gid: str, fields: dict[str, Any]) -> ChangeEvent:
    return ChangeEvent(
        "unicat:records",
        "unicat",
        kind,
        gid,
        "upsert",
        datetime(2026, 11, 1, 12, tzinfo=UTC),
        {"id": gid, "definition": kind, "fields": fields},
    )


async def test_a_unicat_mapping_is_only_configuration(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    """Persons named by key wait for their own object; then they are linked."""
    ctx = replace(context, mappings=MappingsConfig.model_validate(UNICAT_MAPPINGS))
    author = {"gid": "p-1", "last": "Hook", "first": "Daniel"}
    await enqueue(ctx.store, unicat("record", "r-1", {"title": "Sky", "authors": [author]}))
    with pytest.raises(ReferenceNotReplicatedError, match="person unicat person p-1"):
        await replicate_to_pure(await claim_one(ctx.store), ctx)

    await enqueue(ctx.store, unicat("person", "p-1", {"first": "Daniel", "last": "Hook"}))
    daniel = (await replicate_next(ctx, skip=["unicat/record/r-1"])).target_uuid
    result = await replicate_next(ctx)
    assert result.action == "created"
    output = output_of(pure_sim, result.target_uuid)
    assert output["identifiers"][0]["value"] == "unicat:record:r-1"
    assert output["contributors"][0]["person"] == {"systemName": "Person", "uuid": daniel}


# ----------------------------------------------------------------- authorship by relationship

ORCID = "0000-0002-1825-0097"
OTHER_ORCID = "0000-0001-5109-3700"


def with_persons_rule(base: PureContext, **changes: Any) -> PureContext:
    """The context with the publication mapping's persons rule changed by `changes`."""
    publication_rules = base.mappings.sources["elements"]["publication"].model_dump()
    properties = publication_rules["properties"]
    contributors = properties["contributors"]
    persons = {**contributors["persons"], **changes}
    properties = {**properties, "contributors": {**contributors, "persons": persons}}
    mappings = MappingsConfig.model_validate(
        {
            "elements": {
                "user": base.mappings.sources["elements"]["user"].model_dump(),
                "publication": {**publication_rules, "properties": properties},
            }
        }
    )
    return replace(base, mappings=mappings)


def with_author_ids(event: ChangeEvent, scheme: str, *values: str | None) -> ChangeEvent:
    """The publication with these identifiers of a scheme on its author entries, in order."""
    for entry, value in zip(event.payload["fields"]["authors"], values, strict=True):
        if value is not None:
            entry.setdefault("identifiers", {})[scheme] = value
    return event


def with_orcids(event: ChangeEvent, *orcids: str | None) -> ChangeEvent:
    return with_author_ids(event, "orcid", *orcids)


def sides(output: dict[str, Any]) -> list[str]:
    return ["person" if "person" in c else "external" for c in output["contributors"]]


@pytest.mark.parametrize(
    ("admitted", "expected"),
    [
        ({}, ["external", "external"]),
        ({"visible_only": False, "claimed_only": False}, ["person"] * 2),
    ],
)
async def test_hidden_and_suggested_links_link_only_where_the_mapping_admits_them(
    context: PureContext, pure_sim: PureSimulator, admitted: dict[str, bool], expected: list[str]
) -> None:
    ctx = with_persons_rule(context, relationships=admitted)
    paper = publication("7", "On engines", authors=[("Lovelace", "A"), ("Babbage", "C")])
    paper.payload["relationships"] = [
        authorship("1", visible=False),
        authorship("2", claimed=False),
    ]
    await enqueue(ctx.store, user("1", "Lovelace"), user("2", "Babbage", first_name="Charles"))
    await enqueue(ctx.store, paper)
    for _ in range(2):
        await replicate_next(ctx)
    assert sides(output_of(pure_sim, (await replicate_next(ctx)).target_uuid)) == expected


async def test_entries_of_one_name_are_taken_in_their_order_by_the_related_users(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store,
        user("1", "Kim", first_name="Jin"),
        publication("7", "On Kims", authors=[("Kim", "J"), ("Kim", "J")], related=["1"]),
    )
    kim = (await replicate_next(context)).target_uuid
    output = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    assert sides(output) == ["person", "external"]
    assert output["contributors"][0]["person"]["uuid"] == kim


async def test_a_related_user_the_author_list_does_not_name_is_logged_not_added(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store,
        user("1", "Turing", first_name="Alan"),
        publication("7", "On engines", authors=[("Babbage", "C")], related=["1"]),
    )
    await replicate_next(context)
    with capture_logs() as logs:
        output = output_of(pure_sim, (await replicate_next(context)).target_uuid)
    assert sides(output) == ["external"]
    (unnamed,) = [e for e in logs if e["event"] == "mapping.related_person_unnamed"]
    assert (unnamed["log_level"], unnamed["person"], unnamed["match_key"]) == (
        "warning",
        "1",
        "turing|a",
    )


async def test_a_publication_without_its_relationships_read_fails_naming_the_setting(
    context: PureContext,
) -> None:
    paper = publication("7", "On engines", authors=[("Babbage", "C")])
    del paper.payload["relationships"]
    await enqueue(context.store, paper)
    with pytest.raises(PermanentError, match=r"\[elements\] relationships"):
        await replicate_to_pure(await claim_one(context.store), context)


async def test_an_external_person_with_an_orcid_is_reused_by_it_alone(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await context.pure.create("external-persons", {"name": {"firstName": "J", "lastName": "Kim"}})
    orcid_type = {"uri": "/dk/atira/pure/externalperson/externalpersonsources/orcid"}
    known = await context.pure.create(
        "external-persons",
        {
            "name": {"firstName": "Jae", "lastName": "Kim"},
            "identifiers": [{"typeDiscriminator": "ClassifiedId", "id": ORCID, "type": orcid_type}],
        },
    )
    await enqueue(
        context.store,
        with_orcids(publication("7", "Known", authors=[("Kim", "J")]), ORCID),
        with_orcids(publication("8", "Another", authors=[("Kim", "J")]), OTHER_ORCID),
        with_orcids(publication("9", "Known again", authors=[("Kim", "J")]), ORCID),
    )
    first, second, third = [
        output_of(pure_sim, (await replicate_next(context)).target_uuid)["contributors"][0]
        for _ in range(3)
    ]
    assert first["externalPerson"]["uuid"] == third["externalPerson"]["uuid"] == known["uuid"]
    created = pure_sim.objects("external-persons")[second["externalPerson"]["uuid"]]
    assert created["identifiers"][0]["value"] == (
        f"crisync:external-person:orcid:{OTHER_ORCID.replace('-', '')}"
    )
    assert len(pure_sim.objects("external-persons")) == 3  # the namesake was not taken


SCOPUS_AUTHOR_TYPE = {"uri": "/dk/atira/pure/externalperson/externalpersonsources/scopusauthor"}


async def test_external_namesakes_are_told_apart_by_their_scopus_author_ids(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    # Namesakes Pure holds already: one without an id, one known by another Scopus author id.
    await context.pure.create("external-persons", {"name": {"firstName": "J", "lastName": "Kim"}})
    known = await context.pure.create(
        "external-persons",
        {
            "name": {"firstName": "J", "lastName": "Kim"},
            "identifiers": [
                {
                    "typeDiscriminator": "ClassifiedId",
                    "id": "7004212771",
                    "type": SCOPUS_AUTHOR_TYPE,
                }
            ],
        },
    )
    await enqueue(
        context.store,
        with_author_ids(
            publication("7", "Kims", authors=[("Kim", "J"), ("Kim", "J")]),
            "scopus-author-id",
            "57193456789",
            "7004212771",
        ),
        with_author_ids(
            publication("8", "Kim again", authors=[("Kim", "J")]), "scopus-author-id", "57193456789"
        ),
    )
    first, second = output_of(pure_sim, (await replicate_next(context)).target_uuid)["contributors"]
    (again,) = output_of(pure_sim, (await replicate_next(context)).target_uuid)["contributors"]
    assert second["externalPerson"]["uuid"] == known["uuid"]
    assert first["externalPerson"] == again["externalPerson"] != second["externalPerson"]
    created = pure_sim.objects("external-persons")[first["externalPerson"]["uuid"]]
    ours = "crisync:external-person:scopus-author-id:57193456789"
    assert created["identifiers"][0]["value"] == ours
    # The namesake without an id was taken for neither.
    assert len(pure_sim.objects("external-persons")) == 3


async def test_a_context_makes_one_external_person_per_name_per_object(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    ctx = with_persons_rule(context, context=["id"])
    await ctx.pure.create("external-persons", {"name": {"firstName": "C", "lastName": "Babbage"}})
    await enqueue(
        ctx.store,
        *(publication(key, "On engines", authors=[("Babbage", "C")]) for key in ("7", "8")),
    )
    first, second = [
        output_of(pure_sim, (await replicate_next(ctx)).target_uuid)["contributors"][0]
        for _ in range(2)
    ]
    assert first["externalPerson"] != second["externalPerson"]
    assert len(pure_sim.objects("external-persons")) == 3
