"""Authorship from Elements relationships, end to end: the daemon between the simulators.

A contributor is linked to the Pure person of a user only through a visible, claimed
authorship relationship; a name alone links nobody.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import Author, ElementsSimulator
from crisync.mapping.rules import MappingsConfig
from tests.support.secrets import ELEMENTS_PASSWORD

KIM_ORCID = "0000-0002-1825-0097"


@pytest.fixture
def elements_sim() -> ElementsSimulator:
    """An Elements holding nothing but the world each test builds."""
    return ElementsSimulator(objects=0, seed=3, password=ELEMENTS_PASSWORD)


@dataclass(frozen=True)
class World:
    smith_john: int
    smith_jane: int
    kim: int
    park: int
    lee: int
    okafor: int
    paper: int  # names them all; only some claimed it visibly
    kims_paper: int  # the staff Kim's own
    other_kims_paper: int  # another external Kim, J: no ORCID
    jane_link: int
    lee_suggestion: int


def build_world(sim: ElementsSimulator) -> World:
    smith_john = sim.add_user("John", "Smith")
    smith_jane = sim.add_user("Jane", "Smith")
    kim = sim.add_user("Jin", "Kim")
    park = sim.add_user("Min", "Park")
    lee = sim.add_user("Sun", "Lee", current_staff=False)
    okafor = sim.add_user("Mary Ann", "Okafor")  # initials MA, the record writes M
    paper = sim.add_publication(
        "On namesakes",
        [
            Author("Smith", "J"),
            Author("Kim", "J", KIM_ORCID),  # an external co-author, not the staff Kim
            Author("Park", "M"),
            Author("Lee", "S"),
            Author("Okafor", "M"),
        ],
    )
    kims_paper = sim.add_publication("On Kim's own", [Author("Kim", "J")])
    other_kims_paper = sim.add_publication("On another Kim", [Author("Kim", "J")])
    jane_link = sim.relate(paper, smith_jane)
    sim.relate(paper, park, visible=False)  # hidden by Park: not an authorship to show
    lee_suggestion = sim.suggest(paper, lee)  # suggested, never claimed
    sim.relate(paper, okafor)
    sim.relate(kims_paper, kim)
    sim.advance(1)
    return World(
        smith_john,
        smith_jane,
        kim,
        park,
        lee,
        okafor,
        paper,
        kims_paper,
        other_kims_paper,
        jane_link,
        lee_suggestion,
    )


def by_primary_id(pure_sim: PureSimulator, pure_type: str) -> dict[str, str]:
    """PrimaryId value → uuid of every object of the type."""
    return {
        identifier["value"]: uuid
        for uuid, obj in pure_sim.objects(pure_type).items()
        for identifier in obj.get("identifiers") or []
        if identifier["typeDiscriminator"] == "PrimaryId"
    }


def contributors(pure_sim: PureSimulator, publication: int) -> list[tuple[str, str, str]]:
    """(last name, internal | external, uuid of the person) of each contributor, in order."""
    uuid = by_primary_id(pure_sim, "research-outputs")[f"elements:publication:{publication}"]
    found: list[tuple[str, str, str]] = []
    for contributor in pure_sim.objects("research-outputs")[uuid]["contributors"]:
        person: dict[str, Any] = contributor.get("person") or contributor["externalPerson"]
        side = "internal" if "person" in contributor else "external"
        found.append((contributor["name"]["lastName"], side, person["uuid"]))
    return found


async def test_only_related_visible_claimed_users_are_linked_never_by_name(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    world = build_world(elements_sim)
    await run_daemon(config, once=True)
    persons = by_primary_id(pure_sim, "persons")
    externals = by_primary_id(pure_sim, "external-persons")

    def person(user: int) -> str:
        return persons[f"elements:user:{user}"]

    kim_orcid = externals[f"crisync:external-person:orcid:{KIM_ORCID.replace('-', '')}"]
    park, lee = (
        externals["crisync:external-person:park|m"],
        externals["crisync:external-person:lee|s"],
    )
    assert contributors(pure_sim, world.paper) == [
        ("Smith", "internal", person(world.smith_jane)),  # John Smith is not related
        ("Kim", "external", kim_orcid),  # the staff Kim is not related to this paper
        ("Park", "external", park),  # Park hid the authorship
        ("Lee", "external", lee),  # Lee's is only suggested
        ("Okafor", "internal", person(world.okafor)),  # "M" pairs with "Mary Ann"
    ]
    assert contributors(pure_sim, world.kims_paper) == [("Kim", "internal", person(world.kim))]
    # The Kim without an ORCID is another external person than the Kim with one.
    other_kim = externals["crisync:external-person:kim|j"]
    assert contributors(pure_sim, world.other_kims_paper) == [("Kim", "external", other_kim)]
    assert other_kim != kim_orcid
    linked = {
        contributor.get("person", {}).get("uuid")
        for output in pure_sim.objects("research-outputs").values()
        for contributor in output["contributors"]
    }
    assert person(world.smith_john) not in linked
    assert {person(world.park), person(world.lee)} & linked == set()


async def test_adding_and_removing_a_relationship_reaches_pure_in_one_sweep(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    world = build_world(elements_sim)
    await run_daemon(config, once=True)
    persons = by_primary_id(pure_sim, "persons")
    jane, lee = persons[f"elements:user:{world.smith_jane}"], persons[f"elements:user:{world.lee}"]
    before = contributors(pure_sim, world.paper)
    assert (before[0][1:], before[3][1]) == (("internal", jane), "external")

    elements_sim.advance(5)
    elements_sim.unrelate(world.jane_link)
    elements_sim.unrelate(world.lee_suggestion)
    lee_link = elements_sim.relate(world.paper, world.lee)  # Lee claims the paper
    elements_sim.advance(5)
    await run_daemon(config, once=True)
    after = contributors(pure_sim, world.paper)
    assert after[0][1] == "external"
    assert after[3][1:] == ("internal", lee)

    elements_sim.advance(5)
    elements_sim.relate(world.paper, world.smith_jane)
    elements_sim.set_visible(lee_link, False)  # Lee hides it again
    elements_sim.advance(5)
    await run_daemon(config, once=True)
    again = contributors(pure_sim, world.paper)
    assert again[0][1:] == ("internal", jane)
    assert again[3][1] == "external"


def retried(logged: list[dict[str, Any]], publication: int) -> list[str]:
    """The errors a publication's handling was retried after."""
    return [
        line["error"]
        for line in logged
        if line["event"] == "handler.retry_later"
        and (line.get("kind"), line.get("key")) == ("publication", str(publication))
    ]


async def test_a_publication_waits_for_a_related_user_whose_person_is_still_to_come(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    kim = elements_sim.add_user("Jin", "Kim")
    paper = elements_sim.add_publication("On Kim's own", [Author("Kim", "J")])
    elements_sim.relate(paper, kim)
    elements_sim.advance(1)
    # The user's person fails to be created, more often than a request is replayed: the
    # user's event waits for a retry while the publication is handled.
    pure_sim.fail_next(503, 6, content_type="persons", operation="create")
    with structlog.testing.capture_logs() as logged:
        await run_daemon(config, once=True)

    person = by_primary_id(pure_sim, "persons")[f"elements:user:{kim}"]
    assert contributors(pure_sim, paper) == [("Kim", "internal", person)]
    waited = f"related elements user {kim} not replicated yet"
    assert any(waited in error for error in retried(logged, paper))
    assert by_primary_id(pure_sim, "external-persons") == {}  # never made external meanwhile


async def test_a_related_user_handled_without_a_person_is_an_external_author_at_once(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    # The built-in mappings link users to HR's persons and create none: a user without an
    # HR id has no Pure person, by design.
    built_in = config.model_copy(update={"mappings": MappingsConfig()})
    kim = elements_sim.add_user("Jin", "Kim")
    paper = elements_sim.add_publication("On Kim's own", [Author("Kim", "J")])
    elements_sim.relate(paper, kim)
    elements_sim.advance(1)
    with structlog.testing.capture_logs() as logged:
        await run_daemon(built_in, once=True)

    assert by_primary_id(pure_sim, "persons") == {}
    kim_external = by_primary_id(pure_sim, "external-persons")["crisync:external-person:kim|j"]
    assert contributors(pure_sim, paper) == [("Kim", "external", kim_external)]
    assert retried(logged, paper) == []
