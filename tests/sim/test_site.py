"""A site's Pure, populated from an Elements world, read back over loopback HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from crisync.handlers.pure.openapi import PureContract
from crisync.handlers.pure.sim import EDITOR, PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.cli import PURE_API_KEY
from crisync.sim.journals import JOURNALS
from crisync.sim.server import serve
from crisync.sim.site import HR_ID_SOURCE, HR_SYNC, SCOPUS_IMPORT, SiteSummary, populate_site
from tests.support.simulator_process import simulator_process

SEED = 5


@pytest.fixture
def elements() -> ElementsSimulator:
    return ElementsSimulator(objects=60, seed=SEED)


@pytest.fixture
def pure() -> PureSimulator:
    return PureSimulator(api_key=PURE_API_KEY, seed=SEED)


@pytest.fixture
def site(pure: PureSimulator, elements: ElementsSimulator) -> SiteSummary:
    return populate_site(pure, elements, seed=SEED)


@pytest.fixture
async def api(pure: PureSimulator, site: SiteSummary) -> AsyncIterator[Search]:
    async with (
        serve(pure.app()) as origin,
        aiohttp.ClientSession(headers={"api-key": PURE_API_KEY}) as session,
    ):
        yield Search(session, f"{origin}/ws/api")


class Search:
    """Pure's search over HTTP, as a client matching content would use it."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def __call__(self, content_type: str, text: str) -> list[str]:
        """The uuids of the first page of hits, best first."""
        url = f"{self.base}/{content_type}/search"
        async with self.session.post(url, json={"searchString": text}) as response:
            assert response.status == 200
            page = await response.json()
        return [item["uuid"] for item in page["items"]]


def bare(doi: str) -> str:
    return doi.lower().removeprefix("https://doi.org/").removeprefix("doi:")


def dois(output: dict[str, Any]) -> list[str]:
    versions = output.get("electronicVersions", [])
    return [v["doi"] for v in versions if v["typeDiscriminator"] == "DoiElectronicVersion"]


def primary_ids(content: dict[str, Any], source: str) -> list[str]:
    identifiers = content.get("identifiers", [])
    return [i["value"] for i in identifiers if i.get("idSource") == source]


async def test_every_elements_user_known_to_hr_is_a_pure_person_found_by_its_id(
    pure: PureSimulator, elements: ElementsSimulator, site: SiteSummary, api: Search
) -> None:
    persons = pure.objects("persons")
    in_hr = [u for u in elements.users() if u.proprietary_id is not None]
    assert in_hr
    assert sorted(site.persons) == sorted(u.id for u in in_hr)
    for user in in_hr:
        person = persons[site.persons[user.id]]
        assert primary_ids(person, HR_ID_SOURCE) == [user.proprietary_id]
        assert person["name"] == {"firstName": user.first_name, "lastName": user.last_name}
        assert person["createdBy"] == HR_SYNC
        assert person["staffOrganizationAssociations"][0]["emails"][0]["value"] == user.email
        assert (await api("persons", str(user.proprietary_id)))[0] == site.persons[user.id]


async def test_research_outputs_carry_the_publications_dois_and_scopus_ids(
    pure: PureSimulator, elements: ElementsSimulator, site: SiteSummary, api: Search
) -> None:
    outputs = pure.objects("research-outputs")
    identified = [p for p in elements.publications() if p.doi or p.scopus_id]
    assert 0.75 < len(site.outputs) / len(identified) < 1  # most, not all, are in Pure
    written_otherwise = 0
    for publication in (p for p in identified if p.id in site.outputs):
        output = outputs[site.outputs[publication.id]]
        assert [bare(doi) for doi in dois(output)] == ([publication.doi] if publication.doi else [])
        written_otherwise += dois(output) != [publication.doi_as_written]
        scopus = primary_ids(output, "Scopus")
        assert scopus == ([publication.scopus_id[7:]] if publication.scopus_id else [])
        assert output["createdBy"] == (SCOPUS_IMPORT if scopus else EDITOR)
        assert output["title"] == {"value": publication.title}
        if publication.doi_as_written:
            # Found by the DOI as Elements writes it, among the hits of Pure's search.
            assert site.outputs[publication.id] in await api(
                "research-outputs", publication.doi_as_written
            )
        if publication.scopus_id:
            assert (await api("research-outputs", scopus[0]))[0] == site.outputs[publication.id]
    assert written_otherwise  # Pure's users write some DOIs otherwise than Elements does
    assert site.with_scopus_id == sum(bool(primary_ids(o, "Scopus")) for o in outputs.values())
    classes = Counter(o["typeDiscriminator"] for o in outputs.values())
    assert {"ContributionToJournal", "OtherContribution"} <= set(classes)
    journals = pure.objects("journals")
    assert all(
        o["journalAssociation"]["journal"]["uuid"] in journals
        for o in outputs.values()
        if o["typeDiscriminator"] == "ContributionToJournal"
    )


async def test_exactly_one_doi_is_on_two_research_outputs(
    pure: PureSimulator, elements: ElementsSimulator, site: SiteSummary, api: Search
) -> None:
    on_outputs = Counter(
        bare(doi) for o in pure.objects("research-outputs").values() for doi in dois(o)
    )
    assert [doi for doi, count in on_outputs.items() if count > 1] == [site.shared_doi]
    assert on_outputs[site.shared_doi] == 2
    publication = next(p for p in elements.publications() if p.id == site.shared_doi_publication)
    assert publication.doi == site.shared_doi
    assert site.outputs[publication.id] in site.shared_doi_outputs
    hits = await api("research-outputs", site.shared_doi)
    assert set(hits[:2]) == set(site.shared_doi_outputs)


async def test_namesakes_share_a_name_but_not_an_hr_id(
    pure: PureSimulator, elements: ElementsSimulator, site: SiteSummary, api: Search
) -> None:
    users = elements.users()
    # Namesakes from Elements (two users of one name), and one HR person Elements lacks.
    assert any(len(n.elements_user_ids) >= 2 for n in site.namesakes)
    known_ids = {u.proprietary_id for u in users}
    assert any(set(n.hr_ids) - known_ids for n in site.namesakes)
    by_name = Counter(
        (p["name"]["firstName"], p["name"]["lastName"]) for p in pure.objects("persons").values()
    )
    for namesakes in site.namesakes:
        assert len(set(namesakes.hr_ids)) == len(namesakes.hr_ids) >= 2
        assert by_name[(namesakes.first_name, namesakes.last_name)] == len(namesakes.hr_ids)
        hits = await api("persons", namesakes.last_name)
        assert len(hits) >= len(namesakes.hr_ids)


def test_pure_holds_more_than_elements_knows_and_locks_nothing(
    pure: PureSimulator, site: SiteSummary
) -> None:
    persons, outputs = pure.objects("persons"), pure.objects("research-outputs")
    assert len(persons) == site.counts["persons"] > len(site.persons)
    # Beyond the publications' outputs: the duplicate import and manual entries.
    assert len(outputs) == site.counts["research-outputs"] >= len(site.outputs) + 2
    organisations = pure.objects("organizations")
    assert site.counts["organizations"] >= 2
    assert (
        sum(o["createdBy"] == HR_SYNC for o in organisations.values())
        == site.counts["organizations"]
    )
    # Pure's journal list holds every journal the world's articles appear in.
    assert len(pure.objects("journals")) == len(JOURNALS)
    for content_type in ("persons", "research-outputs", "organizations", "journals"):
        assert not any(pure.is_locked(content_type, uuid) for uuid in pure.objects(content_type))


def test_seeded_content_is_valid_against_the_contract(
    pure: PureSimulator, site: SiteSummary
) -> None:
    contract = PureContract.load()
    for content_type in site.counts:
        for stored in pure.objects(content_type).values():
            # What a client reads it may send back: the daemon's updates start from it.
            assert contract.validate_request_body("PUT", f"/{content_type}/{{uuid}}", stored) == []


def test_the_same_world_and_seed_make_the_same_site(site: SiteSummary) -> None:
    again = populate_site(
        PureSimulator(seed=SEED), ElementsSimulator(objects=60, seed=SEED), seed=SEED
    )
    assert again == site
    other = populate_site(
        PureSimulator(seed=SEED), ElementsSimulator(objects=60, seed=SEED), seed=SEED + 1
    )
    assert (other.shared_doi, sorted(other.outputs)) != (site.shared_doi, sorted(site.outputs))


def test_the_summary_says_what_was_seeded(site: SiteSummary) -> None:
    text = "\n".join(site.lines())
    assert f"{site.counts['persons']} persons" in text
    assert f"DOI {site.shared_doi} (Elements publication {site.shared_doi_publication})" in text
    assert all(n.last_name in text for n in site.namesakes)


async def test_the_cli_populates_pure_from_the_world_the_elements_simulator_serves() -> None:
    world = ElementsSimulator(objects=30, seed=3)
    user = next(u for u in world.users() if u.proprietary_id is not None)
    async with (
        simulator_process("pure", "--populate", "--objects", "30", "--seed", "3") as run,
        aiohttp.ClientSession(headers={"api-key": PURE_API_KEY}) as session,
    ):
        assert f"127.0.0.1:{run.port}" in run.banner
        hits = await Search(session, f"http://127.0.0.1:{run.port}/ws/api")(
            "persons", str(user.proprietary_id)
        )
        assert len(hits) == 1
    assert run.returncode == 0
    expected = populate_site(PureSimulator(seed=3), world, seed=3)
    assert "\n".join(expected.lines()) in run.output
