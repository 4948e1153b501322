"""References: what is remembered of external persons between objects."""

from __future__ import annotations

from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.mapping import ExternalIdentity, primary_identifier
from crisync.handlers.pure.match import ContentIndex
from crisync.handlers.pure.references import (
    EXTERNAL_PERSON_ID_SOURCE,
    NAME_SEARCH_SIZE,
    ExternalPersonIndex,
    KeyedLocks,
    PureReferences,
    RecentNames,
    external_person_primary_id,
)
from crisync.handlers.pure.sim import PureSimulator


def test_recent_names_keep_the_most_recently_used_up_to_their_bound() -> None:
    names = RecentNames(size=2)
    names.put("hopper|grace", "u1")
    names.put("lovelace|ada", "u2")
    assert names.get("hopper|grace") == "u1"  # now the most recent
    names.put("turing|alan", "u3")
    assert names.get("lovelace|ada") is None
    assert (names.get("hopper|grace"), names.get("turing|alan")) == ("u1", "u3")


async def test_crisyncs_own_external_person_is_found_past_a_page_of_namesakes(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    # A create whose answer was lost, behind more namesakes than one page holds.
    identity = ExternalIdentity("kim|j", context="elements:publication:7")
    for n in range(NAME_SEARCH_SIZE + 5):
        other = primary_identifier(EXTERNAL_PERSON_ID_SOURCE, f"crisync:external-person:x{n}")
        pure_sim.seed("external-persons", {"name": KIM, "identifiers": [other]}, by="api")
    ours = primary_identifier(EXTERNAL_PERSON_ID_SOURCE, external_person_primary_id(identity.key))
    lost = pure_sim.seed("external-persons", {"name": KIM, "identifiers": [ours]}, by="api")
    found = await references_of(context).external_person(KIM, identity)
    assert found.uuid == lost["uuid"]
    assert len(pure_sim.objects("external-persons")) == NAME_SEARCH_SIZE + 6  # none made


async def test_a_name_too_common_to_search_for_is_answered_by_one_scan(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    seed_namesakes(pure_sim, NAME_SEARCH_SIZE + 5)
    references = references_of(context)
    for n in range(5):
        await references.external_person(KIM, ExternalIdentity("kim|j", context=f"paper {n}"))
    counts = pure_sim.request_counts
    assert counts["external-persons", "search"] == 1  # its namesakes filled the first page
    assert counts["external-persons", "list"] == 1  # one scan, a page of them all
    assert counts["external-persons", "create"] == 5


async def test_a_create_whose_answer_was_lost_is_found_by_reading_on_not_in_the_older_scan(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    seed_namesakes(pure_sim, NAME_SEARCH_SIZE + 5)
    pure_sim.fail_next(504, content_type="external-persons", operation="create", after_write=True)
    identity = ExternalIdentity("kim|j", context="elements:publication:8")
    found = await references_of(context).external_person(KIM, identity)
    made = [
        uuid
        for uuid, person in pure_sim.objects("external-persons").items()
        if external_person_primary_id(identity.key)
        in [i.get("value") for i in person.get("identifiers", [])]
    ]
    assert made == [found.uuid]  # the scan made before the create did not hide it


def seed_namesakes(pure_sim: PureSimulator, count: int) -> None:
    """Namesakes crisync made for other identities, more than a search's first page."""
    for n in range(count):
        other = primary_identifier(EXTERNAL_PERSON_ID_SOURCE, f"crisync:external-person:x{n}")
        pure_sim.seed("external-persons", {"name": KIM, "identifiers": [other]}, by="api")


def references_of(context: PureContext) -> PureReferences:
    return PureReferences(
        context.store,
        context.pure,
        creating=KeyedLocks(),
        known=RecentNames(),
        index=ContentIndex(),
        people=ExternalPersonIndex(),
    )


KIM = {"firstName": "J", "lastName": "Kim"}
