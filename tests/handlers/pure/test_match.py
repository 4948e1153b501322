"""First contact with a populated Pure: content found by the match rules is taken over, never
copied; several candidates are never guessed between."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from crisync.errors import PermanentError
from crisync.handlers.pure import match
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.mapping import MatchProbe
from crisync.handlers.pure.match import AmbiguousMatchError, ContentIndex, candidates, values_at
from crisync.handlers.pure.sim import PureSimulator
from crisync.mapping.rules import MappingsConfig, MatchRule
from crisync.state import mapping
from tests.handlers.pure.helpers import mapped, replicate_next
from tests.support.events import deletion, enqueue, publication, user

HR = "synchronisedUnifiedPerson"
OTHER = "/dk/atira/pure/researchoutput/researchoutputtypes/othercontribution/other"
BOOK = "/dk/atira/pure/researchoutput/researchoutputtypes/bookanthology/book"


@pytest.fixture
def site(context: PureContext) -> PureContext:
    """The handler with the built-in mappings: users link to HR's persons, outputs by DOI."""
    return replace(context, mappings=MappingsConfig())


def hr_id(value: str) -> dict[str, str]:
    return {"typeDiscriminator": "PrimaryId", "idSource": HR, "value": value}


async def hr_person(site: PureContext, first: str, last: str, employee_id: str) -> str:
    """A person as HR's synchronisation puts it into Pure."""
    body = {"name": {"firstName": first, "lastName": last}, "identifiers": [hr_id(employee_id)]}
    return str((await site.pure.create("persons", body))["uuid"])


async def imported_output(
    site: PureContext,
    pure_sim: PureSimulator,
    title: str,
    *,
    doi: str | None = None,
    scopus: str | None = None,
    discriminator: str = "OtherContribution",
    type_uri: str = OTHER,
) -> str:
    """A research output as a Scopus import or an editor made it."""
    body: dict[str, Any] = {
        "typeDiscriminator": discriminator,
        "title": {"value": title},
        "type": {"uri": type_uri},
        "category": {"uri": "/dk/atira/pure/researchoutput/category/research"},
        "language": {"uri": "/dk/atira/pure/core/languages/en_GB"},
        "contributors": [],
        "managingOrganization": {
            "systemName": "Organization",
            "uuid": pure_sim.organization_uuids[0],
        },
        "publicationStatuses": [
            {
                "publicationStatus": {"uri": "/dk/atira/pure/researchoutput/status/published"},
                "current": True,
            }
        ],
    }
    if doi is not None:
        body["electronicVersions"] = [{"typeDiscriminator": "DoiElectronicVersion", "doi": doi}]
    if scopus is not None:
        body["identifiers"] = [
            {"typeDiscriminator": "PrimaryId", "idSource": "Scopus", "value": scopus}
        ]
    return str((await site.pure.create("research-outputs", body))["uuid"])


async def test_a_user_is_linked_to_hrs_person_which_is_never_written_nor_locked(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    uuid = await hr_person(site, "Ada", "Lovelace", "0012345")
    before = dict(pure_sim.objects("persons")[uuid])
    pure_sim.request_counts.clear()
    await enqueue(site.store, user("5", "King", proprietary_id="0012345"))
    result = await replicate_next(site)
    assert (result.action, result.target_uuid) == ("linked", uuid)
    assert result.note == f"matched by identifier {HR} = 0012345"
    assert pure_sim.objects("persons")[uuid] == before  # HR's name, HR's id, nothing of ours
    assert not pure_sim.is_locked("persons", uuid)
    assert set(pure_sim.request_counts) == {("persons", "search"), ("persons", "get")}
    row = await mapped(site.store, "user", "5")
    assert row is not None
    assert (row.origin, row.locked, row.match_key) == ("linked", False, "lovelace|a")


async def test_related_authors_are_linked_to_hr_persons_by_the_name_pure_holds(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    uuid = await hr_person(site, "Ada", "Lovelace", "0012345")
    await enqueue(site.store, user("5", "Lovelace", proprietary_id="0012345"))
    assert (await replicate_next(site)).action == "linked"
    await enqueue(
        site.store, publication("7", "On engines", authors=[("Lovelace", "A")], related=["5"])
    )
    created = await replicate_next(site)
    output = pure_sim.objects("research-outputs")[created.target_uuid or ""]
    (author,) = output["contributors"]
    assert author["person"] == {"systemName": "Person", "uuid": uuid}


async def test_a_user_without_an_hr_person_is_skipped_and_nothing_is_created(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    await hr_person(site, "Ada", "Lovelace", "0012345")
    await enqueue(site.store, user("5", "King", proprietary_id="0099999"), user("6", "Byron"))
    first, second = await replicate_next(site), await replicate_next(site)
    assert (first.action, second.action) == ("skipped", "skipped")
    assert first.note is not None
    assert "create = false" in first.note
    assert len(pure_sim.objects("persons")) == 1
    # Without a proprietary-id there is nothing to search for: no request at all.
    assert pure_sim.request_counts[("persons", "search")] == 1


@pytest.mark.parametrize(
    "in_pure", ["10.1234/ABC.5", "https://doi.org/10.1234/abc.5", "doi:10.1234/abc.5"]
)
async def test_a_publication_is_adopted_by_its_doi_in_any_written_form(
    site: PureContext, pure_sim: PureSimulator, in_pure: str
) -> None:
    uuid = await imported_output(site, pure_sim, "Crystals", doi=in_pure, scopus="85000000001")
    pure_sim.request_counts.clear()
    # Of the imported output's class (a journal article would keep it, and say so).
    await enqueue(
        site.store,
        publication("7", "On crystals", publication_type="other", doi="10.1234/Abc.5"),
    )
    result = await replicate_next(site)
    assert (result.action, result.target_uuid) == ("adopted", uuid)
    assert result.note == "matched by electronicVersions.doi = 10.1234/abc.5"
    stored = pure_sim.objects("research-outputs")[uuid]
    assert stored["title"] == {"value": "On crystals"}  # crisync's now, and locked
    assert pure_sim.is_locked("research-outputs", uuid)
    # The import's own identifier stays beside crisync's PrimaryId.
    assert {"typeDiscriminator": "PrimaryId", "idSource": "Scopus", "value": "85000000001"} in (
        stored["identifiers"]
    )
    assert len(pure_sim.objects("research-outputs")) == 1
    assert pure_sim.request_counts == {
        ("research-outputs", "search"): 1,
        ("research-outputs", "get"): 1,
        ("research-outputs", "update"): 1,
        ("research-outputs", "lock"): 1,
    }
    row = await mapped(site.store, "publication", "7")
    assert row is not None
    assert row.origin == "adopted"


async def test_without_a_doi_the_scopus_id_finds_it(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    uuid = await imported_output(site, pure_sim, "Crystals", scopus="85000000002")
    await enqueue(site.store, publication("7", "On crystals", scopus_eid="2-s2.0-85000000002"))
    result = await replicate_next(site)
    assert (result.action, result.target_uuid) == ("adopted", uuid)


async def test_rules_looking_for_one_value_in_two_places_share_one_search(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    # The Scopus id is looked for as a PrimaryId and as a ClassifiedId: one search text.
    await imported_output(site, pure_sim, "Other work", scopus="85000000009")
    pure_sim.request_counts.clear()
    await enqueue(site.store, publication("7", "On crystals", scopus_eid="2-s2.0-85000000002"))
    assert (await replicate_next(site)).action == "created"
    assert pure_sim.request_counts[("research-outputs", "search")] == 1


async def test_a_doi_two_outputs_share_is_never_guessed_between(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    first = await imported_output(site, pure_sim, "Crystals", doi="10.1234/abc.5")
    second = await imported_output(site, pure_sim, "Crystals (dup)", doi="10.1234/ABC.5")
    await enqueue(site.store, publication("7", "On crystals", doi="10.1234/abc.5"))
    with pytest.raises(AmbiguousMatchError) as raised:
        await replicate_next(site)
    assert sorted(raised.value.candidates) == sorted([first, second])
    assert first in raised.value.message
    assert second in raised.value.message
    assert "crisync retry elements/publication/7" in raised.value.message
    assert raised.value.retriable is False
    assert len(pure_sim.objects("research-outputs")) == 2
    assert not pure_sim.is_locked("research-outputs", first)


async def test_content_another_object_took_over_is_not_taken_twice(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    await imported_output(site, pure_sim, "Crystals", doi="10.1234/abc.5")
    await enqueue(site.store, publication("7", "On crystals", doi="10.1234/abc.5"))
    assert (await replicate_next(site)).action == "adopted"
    await enqueue(site.store, publication("8", "On crystals, again", doi="10.1234/abc.5"))
    with pytest.raises(AmbiguousMatchError, match="already the content of elements publication 7"):
        await replicate_next(site)


async def test_no_match_creates_and_the_next_change_needs_no_search(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    await imported_output(site, pure_sim, "Other work", doi="10.9999/zzz")
    pure_sim.request_counts.clear()
    await enqueue(site.store, publication("7", "On crystals", doi="10.1234/abc.5"))
    assert (await replicate_next(site)).action == "created"
    assert pure_sim.request_counts == {
        ("journals", "search"): 1,
        ("research-outputs", "search"): 1,
        ("research-outputs", "create"): 1,
        ("research-outputs", "lock"): 1,
    }
    pure_sim.request_counts.clear()
    await enqueue(site.store, publication("7", "On large crystals", 5, doi="10.1234/abc.5"))
    assert (await replicate_next(site)).action == "updated"
    assert ("research-outputs", "search") not in pure_sim.request_counts


async def test_adopted_content_of_another_class_keeps_its_class_and_says_so(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    uuid = await imported_output(
        site, pure_sim, "A book", doi="10.1/b", discriminator="BookAnthology", type_uri=BOOK
    )
    await enqueue(site.store, publication("7", "On crystals", doi="10.1/b"))
    result = await replicate_next(site)
    assert result.action == "adopted"
    assert result.note is not None
    assert "kept Pure's class BookAnthology" in result.note
    assert "not written: journalAssociation, not of that class" in result.note
    stored = pure_sim.objects("research-outputs")[uuid]
    assert (stored["typeDiscriminator"], stored["type"]) == ("BookAnthology", {"uri": BOOK})
    assert stored["title"] == {"value": "On crystals"}


async def test_deleting_an_adopted_publication_never_deletes_what_was_there_before(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    site = replace(
        site,
        mappings=MappingsConfig.model_validate(
            {"elements": {"publication": {**_publication_mapping(), "on_delete": "delete"}}}
        ),
    )
    uuid = await imported_output(site, pure_sim, "Crystals", doi="10.1234/abc.5")
    await enqueue(site.store, publication("7", "On crystals", doi="10.1234/abc.5"))
    await replicate_next(site)
    await enqueue(site.store, deletion("publication", "7", minute=5))
    assert (await replicate_next(site)).action == "deleted"
    assert uuid in pure_sim.objects("research-outputs")
    assert not pure_sim.is_locked("research-outputs", uuid)


def _publication_mapping() -> dict[str, Any]:
    built_in = MappingsConfig().for_kind("elements", "publication")
    assert built_in is not None
    return built_in.model_dump(by_alias=True, exclude_defaults=False, mode="json")


async def test_a_common_value_scans_the_type_once_instead_of_searching_it(
    site: PureContext, pure_sim: PureSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every DOI shares the word "10": past one page of hits, one list scan answers for all.
    monkeypatch.setattr(match, "SEARCH_HITS", 2)
    wanted = await imported_output(site, pure_sim, "Crystals", doi="10.1234/abc.5")
    for number in range(3):
        await imported_output(site, pure_sim, f"Other {number}", doi=f"10.1234/other.{number}")
    rule = MatchRule.model_validate(
        {"property": "electronicVersions.doi", "from": "fields.doi", "compare": "doi"}
    )
    index = ContentIndex()
    pure_sim.request_counts.clear()
    for value, expected in (("10.1234/abc.5", [wanted]), ("10.1234/none", [])):
        probe = MatchProbe(rule, value)
        assert await candidates(site.pure, "research-outputs", probe, index) == expected
    # One search found the values too common; the scan answered it and the next one.
    assert pure_sim.request_counts == {
        ("research-outputs", "search"): 1,
        ("research-outputs", "list"): 1,
    }


async def test_a_stale_scan_answers_the_others_while_one_lookup_makes_it_again(
    site: PureContext, pure_sim: PureSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(match, "SEARCH_HITS", 2)
    for number in range(3):
        await imported_output(site, pure_sim, f"Other {number}", doi=f"10.1234/other.{number}")
    rule = MatchRule.model_validate(
        {"property": "electronicVersions.doi", "from": "fields.doi", "compare": "doi"}
    )
    probe = MatchProbe(rule, "10.1234/x")
    index = ContentIndex()
    assert await candidates(site.pure, "research-outputs", probe, index) == []
    added = await imported_output(site, pure_sim, "Added", doi="10.1234/x")
    monkeypatch.setattr(match, "INDEX_MAX_AGE", 0.0)
    pure_sim.request_counts.clear()
    rescanning, meanwhile = await asyncio.gather(
        candidates(site.pure, "research-outputs", probe, index),
        candidates(site.pure, "research-outputs", probe, index),
    )
    # Scanned again, once, not searched: the rule stays answered by the scan. The lookup
    # that found the scan stale waited for the new one; the other had the stale answer.
    assert (rescanning, meanwhile) == ([added], [])
    assert pure_sim.request_counts == {("research-outputs", "list"): 1}


def test_values_are_read_from_identifiers_of_both_kinds_and_through_lists() -> None:
    item = {
        "identifiers": [
            hr_id("0012345"),
            {"typeDiscriminator": "ClassifiedId", "id": "X-1", "type": {"uri": "/t/x"}},
        ],
        "electronicVersions": [
            {"typeDiscriminator": "LinkElectronicVersion", "link": "https://example.org"},
            {"typeDiscriminator": "DoiElectronicVersion", "doi": "https://doi.org/10.5/Q"},
        ],
    }
    by_hr = MatchRule.model_validate({"identifier": HR, "from": "x"})
    by_type = MatchRule.model_validate({"identifier": "/t/x", "from": "x"})
    by_doi = MatchRule.model_validate(
        {"property": "electronicVersions.doi", "from": "x", "compare": "doi"}
    )
    assert values_at(item, by_hr) == {"0012345"}
    assert values_at(item, by_type) == {"X-1"}
    assert values_at(item, by_doi) == {"10.5/q"}


async def test_an_object_outside_scope_is_skipped_and_one_that_leaves_is_unlocked(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    built_in = _publication_mapping()
    scoped = {**built_in, "scope": [{"from": "fields.status", "not_in": ["draft"]}]}
    context = replace(
        context, mappings=MappingsConfig.model_validate({"elements": {"publication": scoped}})
    )
    await enqueue(context.store, publication("8", "A draft", status="draft"))
    skipped = await replicate_next(context)
    assert (skipped.action, skipped.note) == (
        "skipped",
        "out of scope: fields.status is 'draft', one of ['draft']",
    )
    assert sum(pure_sim.request_counts.values()) == 0

    await enqueue(context.store, publication("7", "On crystals"))
    uuid = (await replicate_next(context)).target_uuid or ""
    await enqueue(context.store, publication("7", "On crystals", 5, status="draft"))
    left = await replicate_next(context)
    assert left.action == "deleted"
    assert left.note == "left the mapping's scope: fields.status is 'draft', one of ['draft']"
    assert not pure_sim.is_locked("research-outputs", uuid)
    pure_sim.request_counts.clear()
    await enqueue(context.store, publication("7", "On crystals", 6, status="draft"))
    assert (await replicate_next(context)).action == "skipped"  # left once, not again
    assert sum(pure_sim.request_counts.values()) == 0

    await enqueue(context.store, publication("7", "On crystals", 7, status="final"))
    back = await replicate_next(context)
    assert (back.action, back.target_uuid) == ("updated", uuid)
    assert pure_sim.is_locked("research-outputs", uuid)


SCOPUS_TYPE = "/dk/atira/pure/researchoutput/researchoutputsources/scopus"


async def test_the_doi_and_the_scopus_id_are_written_beside_what_others_wrote(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    uuid = await imported_output(site, pure_sim, "Crystals", doi="https://doi.org/10.1/X")
    pure_sim.edit(
        "research-outputs",
        uuid,
        {
            "electronicVersions": [
                *pure_sim.objects("research-outputs")[uuid]["electronicVersions"],
                {"typeDiscriminator": "LinkElectronicVersion", "link": "https://repo.example/1"},
            ]
        },
    )
    await enqueue(
        site.store,
        publication("7", "On crystals", doi="doi:10.1/x", scopus_eid="2-s2.0-85000000009"),
    )
    assert (await replicate_next(site)).action == "adopted"
    stored = pure_sim.objects("research-outputs")[uuid]
    # The DOI Pure holds, however written, is the one crisync has: nothing to add.
    assert stored["electronicVersions"] == [
        {"typeDiscriminator": "DoiElectronicVersion", "doi": "https://doi.org/10.1/X"},
        {"typeDiscriminator": "LinkElectronicVersion", "link": "https://repo.example/1"},
    ]
    assert {
        "typeDiscriminator": "ClassifiedId",
        "id": "85000000009",
        "type": {"uri": SCOPUS_TYPE},
    } in (stored["identifiers"])


@pytest.mark.parametrize(
    ("fields", "issn"),
    [
        ({"issn": "00219991", "journal": "J Comp Phys"}, "0021-9991"),  # by ISSN, any form
        ({"issn": "", "journal": "NATURE"}, "0028-0836"),  # else by title
        # An ISSN Pure does not know, the electronic one it does, no title it holds.
        ({"issn": "1234-5679", "eissn": "1932-6203", "journal": "Unknown Letters"}, "1932-6203"),
    ],
)
async def test_a_journal_article_is_in_the_journal_pure_holds_by_issn_else_by_title(
    site: PureContext, pure_sim: PureSimulator, fields: dict[str, str], issn: str
) -> None:
    await enqueue(site.store, publication("7", "On crystals", **fields))
    result = await replicate_next(site)
    stored = pure_sim.objects("research-outputs")[result.target_uuid or ""]
    assert stored["typeDiscriminator"] == "ContributionToJournal"
    assert stored["journalAssociation"] == {
        "journal": {"systemName": "Journal", "uuid": pure_sim.journal_uuids[issn]}
    }


async def test_a_journal_article_whose_journal_pure_lacks_waits_saying_so(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        site.store, publication("7", "On crystals", issn="1234-5679", journal="Unknown Letters")
    )
    with pytest.raises(PermanentError, match="a ContributionToJournal needs journalAssociation"):
        await replicate_next(site)
    assert not pure_sim.objects("research-outputs")


async def test_a_journal_pure_lacks_is_created_once_when_the_mapping_allows_it(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    built_in = _publication_mapping()
    journal = {
        "find": "journals",
        "match": [{"property": "issns.issn", "from": "fields.issn", "compare": "issn"}],
        "create": {
            "titles.0.title": {"from": "fields.journal"},
            "issns.0.issn": {"from": "fields.issn|issn"},
            "type.uri": {"value": "/dk/atira/pure/journal/journaltypes/journal/journal"},
            "workflow.step": {"value": "approved"},
        },
    }
    creating = {
        **built_in,
        "properties": {**built_in["properties"], "journalAssociation.journal": journal},
    }
    site = replace(
        site, mappings=MappingsConfig.model_validate({"elements": {"publication": creating}})
    )
    known = set(pure_sim.objects("journals"))
    for key in ("7", "8"):
        article = publication(key, f"Letter {key}", issn="12345679", journal="Unknown Letters")
        await enqueue(site.store, article)
        await replicate_next(site)
    (created,) = set(pure_sim.objects("journals")) - known
    stored = pure_sim.objects("journals")[created]
    assert stored["issns"] == [{"issn": "1234-5679"}]
    assert stored["identifiers"][0]["value"] == "crisync:journals:1234-5679"
    assert pure_sim.is_locked("journals", created)
    outputs = pure_sim.objects("research-outputs").values()
    assert {o["journalAssociation"]["journal"]["uuid"] for o in outputs} == {created}


async def test_each_source_s_id_is_an_identifier_of_its_own(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    event = publication(
        "7", "On crystals", publication_type="other", scopus_eid="2-s2.0-85000000009"
    )
    event.payload["record_ids"]["wos"] = "WOS:000123456700001"
    await enqueue(site.store, event)
    result = await replicate_next(site)
    stored = pure_sim.objects("research-outputs")[result.target_uuid or ""]
    sources = {
        i["type"]["uri"].rsplit("/", 1)[1]: i["id"] for i in stored["identifiers"] if "type" in i
    }
    assert sources == {"scopus": "85000000009", "wos": "WOS:000123456700001"}


async def test_a_changed_scopus_id_or_doi_replaces_crisync_s_own_entry_and_no_other(
    site: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        site.store,
        publication("7", "On crystals", doi="10.1/old", scopus_eid="2-s2.0-85000000001"),
    )
    uuid = (await replicate_next(site)).target_uuid or ""
    stored = pure_sim.objects("research-outputs")[uuid]
    theirs = {"typeDiscriminator": "PrimaryId", "idSource": "WoS", "value": "000123"}
    link = {"typeDiscriminator": "LinkElectronicVersion", "link": "https://repo.example/1"}
    # Another party adds its own entries to both lists (Pure's version moves on).
    pure_sim.edit(
        "research-outputs",
        uuid,
        {
            "identifiers": [*stored["identifiers"], theirs],
            "electronicVersions": [*stored["electronicVersions"], link],
        },
    )
    await enqueue(
        site.store,
        publication("7", "On crystals", minute=5, doi="10.1/new", scopus_eid="2-s2.0-85000000002"),
    )
    assert (await replicate_next(site)).action == "updated"

    stored = pure_sim.objects("research-outputs")[uuid]
    scopus_ids = [i["id"] for i in stored["identifiers"] if i.get("type") == {"uri": SCOPUS_TYPE}]
    assert scopus_ids == ["85000000002"]  # crisync's old one replaced, not kept beside
    assert theirs in stored["identifiers"]
    assert [v.get("doi") or v.get("link") for v in stored["electronicVersions"]] == [
        "https://repo.example/1",
        "10.1/new",
    ]
    async with site.store.reading() as conn:
        row = await mapping.get(conn, "elements", "publication", "7")
    assert row is not None
    assert row.foreign_identifiers == (theirs,)  # crisync's old Scopus id is not taken as theirs
