"""What is replicated (scope), and research outputs as a Pure site expects them: end to end,
the daemon between the simulators."""

from __future__ import annotations

from typing import Any

import pytest

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import Author, ElementsSimulator
from crisync.sim.server import serve
from crisync.telemetry import Telemetry
from tests.support.mappings import with_mappings
from tests.support.secrets import ELEMENTS_PASSWORD

SCOPUS_TYPE = "/dk/atira/pure/researchoutput/researchoutputsources/scopus"


@pytest.fixture
def elements_sim() -> ElementsSimulator:
    """An Elements holding nothing but the world each test builds."""
    return ElementsSimulator(objects=0, seed=5, password=ELEMENTS_PASSWORD)


def outputs_by_title(pure_sim: PureSimulator) -> dict[str, dict[str, Any]]:
    return {o["title"]["value"]: o for o in pure_sim.objects("research-outputs").values()}


async def test_former_staff_and_unclaimed_publications_stay_out_and_one_leaving_is_unlocked(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    sim = elements_sim
    current = sim.add_user("Ada", "Lovelace")
    sim.add_user("Charles", "Babbage", current_staff=False)
    claimed = sim.add_publication("Claimed", [Author("Lovelace", "A")])
    link = sim.relate(claimed, current)
    unclaimed = sim.add_publication("Nobody's", [Author("Lovelace", "A")])
    sim.suggest(unclaimed, current)  # suggested, never claimed
    users = config.mappings.sources["elements"]["user"].model_dump(by_alias=True)
    publications = config.mappings.sources["elements"]["publication"].model_dump(by_alias=True)
    authorship = {"type": "publication-user-authorship", "visible": True, "claimed": True}
    scoped = with_mappings(
        config,
        user={**users, "scope": [{"from": "fields.is-current-staff|boolean", "equals": True}]},
        publication={
            **publications,
            "scope": [{"from": "relationships", "where": authorship, "present": True}],
        },
    )

    telemetry = Telemetry()
    await run_daemon(scoped, once=True, telemetry=telemetry)
    persons = {p["name"]["lastName"] for p in pure_sim.objects("persons").values()}
    assert persons == {"Lovelace"}  # Babbage is former staff
    assert set(outputs_by_title(pure_sim)) == {"Claimed"}
    assert telemetry.outcomes == {"created": 2, "skipped": 2}

    # The claim goes: the publication leaves scope, and its content is unlocked, not deleted.
    sim.advance(120)
    sim.unrelate(link)
    await run_daemon(scoped, once=True)
    (output,) = pure_sim.objects("research-outputs").items()
    assert not pure_sim.is_locked("research-outputs", output[0])


async def test_only_academic_staff_outside_an_excluded_faculty_reach_pure(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    sim = elements_sim
    sim.add_user("Ada", "Lovelace", faculty="Natural Sciences")
    sim.add_user("Grace", "Hopper", academic=False)  # is-academic false
    sim.add_user("Alan", "Turing", faculty="Business School")  # organisation-defined data
    users = config.mappings.sources["elements"]["user"].model_dump(by_alias=True)
    scope = [
        {"from": "fields.is-academic|boolean", "equals": True},
        {"from": "fields.organisation-defined-data.Faculty", "not_in": ["business school"]},
    ]

    telemetry = Telemetry()
    await run_daemon(
        with_mappings(config, user={**users, "scope": scope}), once=True, telemetry=telemetry
    )
    persons = {p["name"]["lastName"] for p in pure_sim.objects("persons").values()}
    assert persons == {"Lovelace"}
    assert telemetry.outcomes == {"created": 1, "skipped": 2}


async def test_a_journal_article_in_its_journal_with_doi_scopus_id_and_preferred_fields(
    config: Config, pure_sim: PureSimulator
) -> None:
    # The default world: journal articles with a DOI and a Scopus record beside the manual one.
    sim = ElementsSimulator(objects=60, seed=2, password=ELEMENTS_PASSWORD)
    article = next(
        p
        for p in sim.publications()
        if p.type_name == "journal-article" and p.doi and p.scopus_id and p.journal
    )
    assert article.journal is not None
    assert article.scopus_id is not None
    # Scopus's record first: its title (with its full stop) wins over the manual record's.
    assert config.elements is not None
    elements = config.elements.model_copy(update={"record_precedence": ["scopus", "manual"]})
    async with serve(sim.app()) as origin:
        elements = elements.model_copy(update={"url": f"{origin}/secure-api/v5.5"})
        await run_daemon(config.model_copy(update={"elements": elements}), once=True)

    output = outputs_by_title(pure_sim)[article.title.rstrip(".") + "."]
    assert output["typeDiscriminator"] == "ContributionToJournal"
    assert output["journalAssociation"] == {
        "journal": {"systemName": "Journal", "uuid": pure_sim.journal_uuids[article.journal[1]]}
    }
    assert {"typeDiscriminator": "DoiElectronicVersion", "doi": article.doi} in (
        output["electronicVersions"]
    )
    scopus_number = article.scopus_id.removeprefix("2-s2.0-")
    assert {
        "typeDiscriminator": "ClassifiedId",
        "id": scopus_number,
        "type": {"uri": SCOPUS_TYPE},
    } in (output["identifiers"])
