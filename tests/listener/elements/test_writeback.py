"""Write-back of Pure uuids into Elements records: checks at start, PATCH, its failures."""

from __future__ import annotations

import aiohttp
import pytest
from lxml import etree
from structlog.testing import capture_logs

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.errors import CredentialError, PermanentError
from crisync.handlers.base import SourceRefusedError
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.sim import ElementsSimulator
from crisync.listener.elements.writeback import UPDATE_NAMESPACE, ElementsWriteback, update_record
from crisync.state import dead_letters, mapping
from crisync.state.store import Store, fetch_all
from crisync.telemetry import Telemetry
from tests.support.elements import elements_settings, served, simulator

NOTES = {"publications": {"source": "manual", "field": "notes"}}


def with_writeback(
    config: Config, writeback: dict[str, dict[str, str]], **changes: object
) -> Config:
    return config.model_copy(
        update={"elements": elements_settings(config, writeback=writeback, **changes)}
    )


def writeback_for(
    config: Config,
    session: aiohttp.ClientSession,
    writeback: dict[str, dict[str, str]],
    store: Store,
) -> ElementsWriteback:
    settings = elements_settings(config, writeback=writeback)
    client = ElementsClient(session, settings, telemetry=Telemetry())
    return ElementsWriteback(settings, client, store)


def type_requests(sim: ElementsSimulator) -> int:
    return sum(target.endswith("/publication/types") for _, target in sim.requests)


@pytest.mark.parametrize(
    ("source", "field", "problem"),
    [
        ("nope", "notes", "no publication data source is named 'nope'"),
        ("wos", "notes", "does not accept API imports"),
        ("manual", "authors", "not a text field that allows the set operation"),
        ("manual", "nonsense", "no publication type has a field 'nonsense'"),
    ],
)
async def test_a_misconfiguration_is_refused_at_start_and_never_asked_again(
    config: Config,
    session: aiohttp.ClientSession,
    store: Store,
    elements_sim: ElementsSimulator,
    source: str,
    field: str,
    problem: str,
) -> None:
    writeback = writeback_for(
        config, session, {"publications": {"source": source, "field": field}}, store
    )
    with capture_logs() as logs, pytest.raises(SourceRefusedError, match=problem):
        await writeback.verify()
    (reported,) = [e for e in logs if e["event"] == "elements.writeback_misconfigured"]
    assert problem in reported["problem"]
    assert reported["log_level"] == "error"
    assert not writeback.wanted("publication")
    asked = len(elements_sim.requests)
    with pytest.raises(PermanentError, match="misconfigured"):
        await writeback.write("publication", {"id": "1", "records": []}, "uuid")
    assert len(elements_sim.requests) == asked  # known, not asked again


async def test_a_check_elements_cannot_answer_at_start_is_made_before_the_first_write(
    config: Config, session: aiohttp.ClientSession, store: Store, elements_sim: ElementsSimulator
) -> None:
    writeback = writeback_for(config, session, NOTES, store)
    elements_sim.fail_next(504, "database timeout")
    with capture_logs() as logs:
        await writeback.verify()
    assert "elements.writeback_check_deferred" in [e["event"] for e in logs]
    assert writeback.wanted("publication")
    target = await writeback.target("publication")
    await writeback.target("publication")
    assert target.types == {"journal-article", "book", "chapter"}  # conference lacks notes
    assert type_requests(elements_sim) == 1


async def test_refused_credentials_at_start_are_no_misconfiguration(
    config: Config, session: aiohttp.ClientSession, store: Store, elements_sim: ElementsSimulator
) -> None:
    writeback = writeback_for(config, session, NOTES, store)
    elements_sim.fail_next(401, "invalid credentials")
    with capture_logs() as logs:
        await writeback.verify()
    assert [e["event"] for e in logs] == ["elements.writeback_check_deferred"]
    assert writeback.wanted("publication")
    elements_sim.fail_next(403, "unauthorised access")
    with pytest.raises(PermanentError, match="unauthorised access") as caught:
        await writeback.write("publication", {"id": "1", "records": []}, "uuid")
    # A dead letter, not a CredentialError: that would pause the replication into Pure too.
    assert not isinstance(caught.value, CredentialError)


def test_the_update_record_document_sets_one_text_field() -> None:
    root = etree.fromstring(update_record("notes", "6a1d-uuid"))
    assert root.tag == f"{{{UPDATE_NAMESPACE}}}update-record"
    (item,) = root.findall(f"{{{UPDATE_NAMESPACE}}}fields/{{{UPDATE_NAMESPACE}}}field")
    assert (item.get("name"), item.get("operation")) == ("notes", "set")
    assert item.findtext(f"{{{UPDATE_NAMESPACE}}}text") == "6a1d-uuid"


async def test_each_created_publication_gets_its_pure_uuid_written_back(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    configured = with_writeback(config, NOTES)
    telemetry = Telemetry()
    await run_daemon(configured, once=True, telemetry=telemetry)

    publications = elements_sim.object_ids("publication")
    async with Store.open(config.state.path) as store, store.reading() as conn:
        uuids = {
            p: (await mapping.get(conn, "elements", "publication", str(p))) for p in publications
        }
    written = [p for p in publications if elements_sim.type_of("publication", p) != "conference"]
    assert written
    assert len(written) < len(publications)  # conferences have no notes field: skipped
    for publication, row in uuids.items():
        assert row is not None
        expected = row.target_uuid if publication in written else None
        assert elements_sim.notes_of("publication", publication) == expected
    assert len(elements_sim.patches) == len(written)
    assert type_requests(elements_sim) == 1  # checked once, at start
    assert telemetry.requests[("elements", "PATCH", "303")] == len(written)  # 303 followed
    assert telemetry.outcomes["updated"] == len(written)

    # The write-back modified the publications; reading them again creates nothing new.
    elements_sim.advance(5)
    pure_sim.request_counts.clear()
    await run_daemon(configured, once=True)
    assert len(elements_sim.patches) == len(written)
    assert pure_sim.request_counts[("research-outputs", "create")] == 0


async def test_a_write_back_coming_back_through_the_feed_costs_pure_nothing(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    configured = with_writeback(config, NOTES)
    await run_daemon(configured, once=True)
    written = {str(object_id) for _, object_id, _ in elements_sim.patches}
    assert written
    research_outputs = len(elements_sim.object_ids("publication"))
    assert pure_sim.request_counts[("research-outputs", "create")] == research_outputs
    assert pure_sim.request_counts[("research-outputs", "lock")] == research_outputs

    # The feed reads every written publication again, newer by the write-back alone. The
    # PATCH's answer shows no relationships, which a publication's authors come from: so its
    # echo is read again, relationships and all, and found unchanged.
    elements_sim.advance(5)
    pure_sim.request_counts.clear()
    with capture_logs() as logs:
        await run_daemon(configured, once=True)
    replicated_again = {
        entry["key"]: entry["action"]
        for entry in logs
        if entry["event"] == "object.replicated"
        and (entry["source"], entry["kind"]) == ("elements", "publication")
    }
    assert {key: replicated_again.get(key) for key in written} == dict.fromkeys(
        written, "unchanged"
    )
    # Pure is not written: the mapped bodies are as before (their journals looked up again).
    assert set(pure_sim.request_counts) <= {("journals", "search")}


async def test_a_write_back_that_is_not_the_only_change_comes_through(
    config: Config, session: aiohttp.ClientSession, store: Store, elements_sim: ElementsSimulator
) -> None:
    writeback = writeback_for(config, session, NOTES, store)
    client = ElementsClient(session, elements_settings(config), telemetry=Telemetry())
    written = [
        p
        for p in elements_sim.object_ids("publication")
        if elements_sim.type_of("publication", p) != "conference"
    ]
    alone, edited = [(await client.get_object("publications", str(p))).obj for p in written[:2]]
    assert alone is not None
    assert edited is not None
    elements_sim.touch("publication", written[1], title="Edited while crisync replicated it")

    with capture_logs() as logs:
        for read in (alone, edited):
            assert await writeback.write("publication", read.payload, "6a1d-uuid")
    async with store.reading() as conn:
        waiting = await fetch_all(conn, "SELECT key FROM inbox")
        done = await fetch_all(conn, "SELECT key FROM inbox_done")
    # The echo of the other one will be replicated.
    assert ([tuple(row) for row in waiting], [tuple(row) for row in done]) == (
        [],
        [(str(written[0]),)],
    )
    (not_alone,) = [e for e in logs if e["event"] == "elements.writeback_not_alone"]
    assert not_alone["id"] == str(written[1])


async def test_a_refused_write_back_is_a_dead_letter_and_pure_replication_goes_on(
    config: Config, pure_sim: PureSimulator
) -> None:
    read_only = simulator(can_modify=False)
    async with served(read_only) as url:
        await run_daemon(with_writeback(config, NOTES, url=url), once=True)
    publications = read_only.object_ids("publication")
    assert len(pure_sim.objects("research-outputs")) == len(publications)
    async with Store.open(config.state.path) as store, store.reading() as conn:
        letters = await dead_letters.all_dead_letters(conn)
    assert letters
    assert {letter.source for letter in letters} == {"elements-writeback"}
    assert all("right to modify data" in letter.message for letter in letters)
    assert all("unauthorised access" in letter.message for letter in letters)
    assert all(letter.status == 403 for letter in letters)


async def test_a_write_back_to_an_object_deleted_meanwhile_is_skipped(
    config: Config, session: aiohttp.ClientSession, store: Store, elements_sim: ElementsSimulator
) -> None:
    writeback = writeback_for(config, session, NOTES, store)
    client = ElementsClient(session, elements_settings(config), telemetry=Telemetry())
    written = next(
        p
        for p in elements_sim.object_ids("publication")
        if elements_sim.type_of("publication", p) != "conference"
    )
    read = (await client.get_object("publications", str(written))).obj
    assert read is not None
    elements_sim.delete("publication", written)

    with capture_logs() as logs:
        # Not a dead letter: there is nothing left to write into, and nothing to retry.
        assert not await writeback.write("publication", read.payload, "6a1d-uuid")
    (skipped,) = [e for e in logs if e["event"] == "elements.writeback_skipped"]
    assert skipped["reason"] == "its record from manual is gone"
    assert elements_sim.patches == []
