"""References: what is remembered of external persons between objects."""

from __future__ import annotations

from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.mapping import ExternalIdentity, primary_identifier
from crisync.handlers.pure.match import ContentIndex
from crisync.handlers.pure.references import (
    EXTERNAL_PERSON_ID_SOURCE,
    NAME_SEARCH_SIZE,
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
    references = PureReferences(
        context.store, context.pure, KeyedLocks(), RecentNames(), ContentIndex()
    )
    found = await references.external_person(KIM, identity)
    assert found.uuid == lost["uuid"]
    assert len(pure_sim.objects("external-persons")) == NAME_SEARCH_SIZE + 6  # none made


KIM = {"firstName": "J", "lastName": "Kim"}
