"""First contact with a populated Pure, as a new site meets it: the plan first, then the run.

The Pure simulator holds what a real site's Pure holds before crisync arrives (HR's persons,
imported research outputs with DOIs and Scopus ids, namesakes, one DOI on two outputs);
crisync runs with its built-in mappings.
"""

from __future__ import annotations

from typing import Any

import pytest

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.mapping.compare import normalised
from crisync.mapping.rules import MappingsConfig
from crisync.plan import make_plan, render_object
from crisync.sim.broker import MosquittoBroker
from crisync.sim.site import HR_ID_SOURCE, SiteSummary, populate_site
from crisync.telemetry import Telemetry
from tests.test_plan import once_actions, pure_writes


@pytest.fixture
def site(pure_sim: PureSimulator, elements_sim: ElementsSimulator) -> SiteSummary:
    return populate_site(pure_sim, elements_sim)


@pytest.fixture
def built_in(config: Config) -> Config:
    """The test configuration with crisync's own mappings, as a new site starts."""
    return config.model_copy(update={"mappings": MappingsConfig()})


def dois(output: dict[str, Any]) -> set[str]:
    return {
        doi
        for version in output.get("electronicVersions") or []
        if (doi := normalised("doi", version.get("doi"))) is not None
    }


def hr_ids(person: dict[str, Any]) -> list[str]:
    return [
        identifier["value"]
        for identifier in person.get("identifiers") or []
        if identifier.get("idSource") == HR_ID_SOURCE and ":" not in identifier["value"]
    ]


async def test_the_plan_then_the_run_take_over_the_site_and_copy_nothing(
    built_in: Config,
    site: SiteSummary,
    pure_sim: PureSimulator,
    elements_sim: ElementsSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    persons_before = {uuid: hr_ids(p) for uuid, p in pure_sim.objects("persons").items()}
    outputs_before = {uuid: dois(o) for uuid, o in pure_sim.objects("research-outputs").items()}
    dois_before = set().union(*outputs_before.values())

    assert site.namesakes  # persons of one name: nothing found by name alone may be taken
    telemetry = Telemetry()  # every answer Pure gave, by status
    plan = await make_plan(built_in, telemetry=telemetry)
    assert pure_writes(pure_sim) == 0
    by_key = {planned.object_key: planned for planned in plan.objects}
    for user, uuid in site.persons.items():
        linked = by_key[f"elements/user/{user}"]
        assert (linked.action, linked.target_uuid) == ("link", uuid)
    for publication, uuid in site.outputs.items():
        planned = by_key[f"elements/publication/{publication}"]
        if publication == site.shared_doi_publication:
            assert planned.action == "ambiguous"
            assert all(candidate in (planned.note or "") for candidate in site.shared_doi_outputs)
        else:
            assert (planned.action, planned.target_uuid) == ("adopt", uuid)
    assert set(plan.summary) <= {"link", "skip", "adopt", "create", "ambiguous"}

    done = await once_actions(built_in, broker, topic_prefix, telemetry)
    assert done == {key: planned.action for key, planned in by_key.items()}

    # No person made; HR's ids where HR put them.
    assert {uuid: hr_ids(p) for uuid, p in pure_sim.objects("persons").items()} == persons_before
    # Every output Pure holds now that it did not before is a publication whose DOI it lacked.
    created = set(pure_sim.objects("research-outputs")) - set(outputs_before)
    planned_creates = [
        key
        for key, planned in by_key.items()
        if "/publication/" in key and planned.action == "create"
    ]
    assert len(created) == len(planned_creates)
    for publication in elements_sim.publications():
        if publication.doi is not None and normalised("doi", publication.doi) in dois_before:
            key = f"elements/publication/{publication.id}"
            assert done[key] in ("adopt", "ambiguous")
    # The two outputs sharing a DOI: neither taken, neither locked.
    assert not any(pure_sim.is_locked("research-outputs", u) for u in site.shared_doi_outputs)

    writes = pure_writes(pure_sim)
    for _ in range(2):
        await run_daemon(built_in, once=True, telemetry=telemetry)
    assert pure_writes(pure_sim) == writes  # a second and third run write nothing

    # No DOI on two research outputs but the pair the site was seeded with.
    holders: dict[str, list[str]] = {}
    for uuid, output in pure_sim.objects("research-outputs").items():
        for doi in dois(output):
            holders.setdefault(doi, []).append(uuid)
    shared = {doi: sorted(uuids) for doi, uuids in holders.items() if len(uuids) > 1}
    assert shared == {site.shared_doi: sorted(site.shared_doi_outputs)}
    # Every request valid: no 4xx but the 404s of crisync's own probes on first contact,
    # the update of no content that shows the right to write (external-persons and
    # research-outputs, in the run) and the search of each mapped type this Pure lacks
    # (equipment and activities, in the plan and in the run).
    client_errors = {
        (method, status): count
        for (api, method, status), count in telemetry.requests.items()
        if api == "pure" and status.startswith("4")
    }
    assert client_errors == {("PUT", "404"): 2, ("POST", "404"): 4}


async def test_show_gives_the_content_a_user_is_linked_to_and_a_publication_adopts(
    built_in: Config, site: SiteSummary, pure_sim: PureSimulator
) -> None:
    user, person_uuid = next(iter(site.persons.items()))
    (linked,) = (await make_plan(built_in, source="elements", kind="user", key=str(user))).objects
    shown = render_object(linked)
    assert shown.startswith(f"elements/user/{user}: link persons {person_uuid}")
    name = pure_sim.objects("persons")[person_uuid]["name"]
    now = shown.split("In the target now:\n")[1].split("As crisync would leave it:")[0]
    assert f'"firstName": "{name["firstName"]}"' in now
    assert f'"lastName": "{name["lastName"]}"' in now
    assert shown.endswith("What changes: nothing")

    publication, output_uuid = next(
        (key, uuid) for key, uuid in site.outputs.items() if key != site.shared_doi_publication
    )
    plan = await make_plan(built_in, source="elements", kind="publication", key=str(publication))
    (adopted,) = plan.objects
    shown = render_object(adopted)
    assert shown.startswith(
        f"elements/publication/{publication}: adopt research-outputs {output_uuid}"
    )
    title = pure_sim.objects("research-outputs")[output_uuid]["title"]["value"]
    assert title in shown.split("In the target now:\n")[1].split("As crisync would leave it:")[0]
    assert "What changes:\n  " in shown
    assert pure_writes(pure_sim) == 0
