"""The Elements listener against the simulator: cursor rules, deletions, errors, safety."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from crisync.config.model import Config
from crisync.errors import NotFoundError, PermanentError
from crisync.listener.base import REQUEST_ATTEMPTS
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.config import CATEGORY_OF_FEED
from crisync.listener.elements.feed import Feed
from crisync.listener.elements.sim import API_NS_HTTPS, ElementsSimulator
from crisync.state import cursors, http_validators, inbox
from crisync.state.store import Store, iso_utc
from crisync.telemetry import Telemetry
from tests.support.elements import (
    START,
    cursor_of,
    elements_settings,
    listener_with,
    pending,
    served,
    simulator,
)

PUBLICATIONS = Feed("publications")
USERS = Feed("users")


def queries(sim: ElementsSimulator, resource: str) -> list[dict[str, list[str]]]:
    """The query of every request the simulator received for this resource."""
    return [
        parse_qs(urlsplit(target).query)
        for _, target in sim.requests
        if urlsplit(target).path == "/secure-api/v5.5" + resource
    ]


# ----------------------------------------------------------------------- cursor rules


async def test_first_sweep_reads_every_object_and_sets_the_server_high_water(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, per_page=5)
    elements_sim.advance(3600)  # the simulator's clock, far from ours
    result = await listener.sweep(PUBLICATIONS)
    expected = {("publication", str(i)) for i in elements_sim.object_ids("publication")}
    assert result.complete
    assert result.pages == -(-len(expected) // 5)
    assert {(kind, key) for kind, key, _, _ in await pending(store)} == expected
    cursor = await cursor_of(store, "elements:publications")
    assert cursor.next_url is None
    assert cursor.high_water == elements_sim.now.replace(microsecond=0)


async def test_next_sweep_asks_inclusively_since_high_water_minus_lookback(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, lookback=42)
    await listener.sweep(PUBLICATIONS)
    before = len(await pending(store))
    high_water = (await cursor_of(store, "elements:publications")).high_water
    assert high_water is not None
    elements_sim.advance(5)
    elements_sim.touch("publication", elements_sim.object_ids("publication")[0], title="New")
    result = await listener.sweep(PUBLICATIONS)
    assert result.events_added == 1
    assert len(await pending(store)) == before + 1
    (last,) = queries(elements_sim, "/publications")[-1:]
    since = datetime.fromisoformat(last["affected-since"][0])
    assert since == high_water - timedelta(seconds=42)
    assert since.utcoffset() == timedelta(0)  # a "+00:00" that arrived intact: sent as %2B
    assert last["detail"] == ["full"]


async def test_the_first_sweep_is_backfill_and_later_ones_bring_ordinary_changes(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, per_page=5, lookback=0)
    await listener.sweep(PUBLICATIONS)
    touched = str(elements_sim.object_ids("publication")[0])
    elements_sim.advance(5)
    elements_sim.touch("publication", int(touched), title="New")
    await listener.sweep(PUBLICATIONS)
    async with store.reading() as conn:
        rows = await conn.execute_fetchall(
            "SELECT key, backfill FROM inbox WHERE state = 'pending' ORDER BY id"
        )
    first_pass = rows[: len(elements_sim.object_ids("publication"))]
    assert {backfill for _, backfill in first_pass} == {1}
    assert [tuple(row) for row in rows[len(first_pass) :]] == [(touched, 0)]


async def test_objects_sharing_one_stamp_across_page_boundaries_are_all_read(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    """Five objects stamped with one instant, split over pages, then one more committed late
    with the very same stamp, which equals the high-water mark: every one of them is read."""
    listener = listener_with(session, config, store, per_page=2, lookback=0)
    await listener.sweep(PUBLICATIONS)
    elements_sim.advance(60)
    instant = elements_sim.now  # a whole second, as the next Date will be
    shared = elements_sim.object_ids("publication")[:6]
    for publication in shared[:5]:
        elements_sim.touch("publication", publication, title=f"Shared {publication}", at=instant)
    await listener.sweep(PUBLICATIONS)
    assert (await cursor_of(store, "elements:publications")).high_water == instant
    elements_sim.touch("publication", shared[5], title="Committed late", at=instant)
    await listener.sweep(PUBLICATIONS)

    at_instant = [
        (kind, key) for kind, key, _, when in await pending(store) if when == iso_utc(instant)
    ]
    assert sorted(at_instant) == sorted(("publication", str(p)) for p in shared)


async def test_a_late_commit_stamped_before_the_sweep_began_is_read_by_the_next_sweep(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, lookback=10)
    await listener.sweep(PUBLICATIONS)
    high_water = (await cursor_of(store, "elements:publications")).high_water
    assert high_water is not None
    late = elements_sim.object_ids("publication")[3]
    elements_sim.advance(30)
    # A transaction that began 3 s before the sweep and committed after it.
    stamp = high_water - timedelta(seconds=3)
    elements_sim.touch("publication", late, title="Late", at=stamp)
    result = await listener.sweep(PUBLICATIONS)
    assert result.events_added == 1
    assert ("publication", str(late)) in {(k, key) for k, key, _, _ in await pending(store)}


async def test_a_server_clock_ahead_of_its_database_is_covered_by_the_lookback(
    store: Store, config: Config, session: aiohttp.ClientSession
) -> None:
    sim = simulator(date_skew=20)
    async with served(sim) as url:
        listener = listener_with(session, config, store, url=url, lookback=30)
        await listener.sweep(PUBLICATIONS)
        assert (await cursor_of(store, "elements:publications")).high_water == START + timedelta(
            seconds=20
        )
        sim.advance(2)
        changed = sim.object_ids("publication")[0]
        sim.touch("publication", changed, title="Stamped by the database clock")
        result = await listener.sweep(PUBLICATIONS)
    assert result.events_added == 1


async def test_a_sweep_stopped_between_pages_resumes_at_its_stored_next_link(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    stopping = asyncio.Event()
    stopping.set()  # checked after each committed page
    first = listener_with(session, config, store, per_page=5, stopping=stopping)
    result = await first.sweep(PUBLICATIONS)
    assert (result.pages, result.complete) == (1, False)
    cursor = await cursor_of(store, "elements:publications")
    assert cursor.next_url is not None
    assert cursor.high_water is None
    assert cursor.sweep_started is not None

    elements_sim.requests.clear()
    with capture_logs() as logs:
        rest = await listener_with(session, config, store, per_page=5).sweep(PUBLICATIONS)
    assert rest.complete
    assert cursor.next_url.endswith(elements_sim.requests[0][1])
    assert any(entry["event"] == "elements.sweep_resumed" for entry in logs)
    done = await cursor_of(store, "elements:publications")
    assert done.high_water == cursor.sweep_started
    assert len(await pending(store)) == len(elements_sim.object_ids("publication"))


async def test_a_sweep_that_found_nothing_is_logged_at_debug_one_that_found_events_at_info(
    store: Store, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store)
    with capture_logs() as logs:
        await listener.sweep(PUBLICATIONS)  # the backfill
        await listener.sweep(PUBLICATIONS)  # nothing changed since
    done = [
        (e["events_added"], e["log_level"]) for e in logs if e["event"] == "elements.sweep_done"
    ]
    assert [(added > 0, level) for added, level in done] == [(True, "info"), (False, "debug")]


# ----------------------------------------------------------------------- categories


async def test_every_category_can_be_read_with_the_generic_payload(
    store: Store, config: Config, session: aiohttp.ClientSession
) -> None:
    sim = simulator(items_per_category=2)
    async with served(sim) as url:
        listener = listener_with(
            session, config, store, url=url, categories=list(CATEGORY_OF_FEED), deletions=False
        )
        await listener.sweep_all()
    async with store.reading() as conn:
        events = await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
    assert {event.kind for event in events} == set(CATEGORY_OF_FEED.values())
    for event in events:
        # Publications' relationships are read by default, no other category's.
        relationships = {"relationships"} if event.kind == "publication" else set()
        assert set(event.payload) == {
            "id",
            "category",
            "attributes",
            "fields",
            "records",
            "record_ids",
            "record_fields",
            *relationships,
        }
        assert event.feed == f"elements:{_feed_of(event.kind)}"
    grant = next(event for event in events if event.kind == "grant")
    assert grant.payload["fields"]["title"] == sim.title_of(int(grant.key), "grant")


def _feed_of(category: str) -> str:
    return next(feed for feed, cat in CATEGORY_OF_FEED.items() if cat == category)


def test_configured_categories_and_page_sizes_are_checked(config: Config) -> None:
    assert elements_settings(config, detail="ref", per_page=1000).per_page == 1000
    for changes, problem in (
        ({"per_page": 26}, "at most 25 with detail = 'full'"),
        ({"detail": "ref", "per_page": 1001}, "at most 1000"),
        ({"categories": ["gadgets"]}, "categories.0"),
        ({"categories": ["users", "users"]}, "listed twice"),
        (
            {"categories": ["users"], "writeback": {"grants": {"source": "m", "field": "f"}}},
            "not read: grants",
        ),
    ):
        with pytest.raises(ValidationError, match=problem):
            elements_settings(config, **changes)


# ----------------------------------------------------------------------- deletions


async def test_deletions_become_delete_events_with_their_own_cursor(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, categories=["publications"])
    before = elements_sim.object_ids("publication")
    elements_sim.delete("publication", before[0])  # before crisync looked: no news
    elements_sim.advance(120)  # beyond the lookback
    await listener.sweep_all()
    assert all(action == "upsert" for _, _, action, _ in await pending(store))

    elements_sim.advance(10)
    gone = before[1]
    deleted_at = elements_sim.now
    elements_sim.delete("publication", gone)
    await listener.sweep_all()

    deletes = [row for row in await pending(store) if row[2] == "delete"]
    assert deletes == [("publication", str(gone), "delete", deleted_at.isoformat())]
    async with store.reading() as conn:
        (event,) = [
            e
            for e in await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
            if e.action == "delete"
        ]
        deleted_cursor = await cursors.get(conn, "elements:deleted:publications")
    assert event.source == "elements"
    assert event.feed == "elements:deleted:publications"
    assert event.payload == {
        "id": str(gone),
        "category": "publication",
        "deleted_at": deleted_at.isoformat(),
    }
    assert deleted_cursor.high_water is not None
    # Asked with the lookback, in an encoded ISO 8601 with offset.
    since = queries(elements_sim, "/deleted/publications")[-1]["deleted-since"][0]
    assert datetime.fromisoformat(since).tzinfo is not None


# ----------------------------------------------------------------------- schema version


async def test_below_schema_5_5_sweeps_fall_back_to_modified_since_and_say_so_once(
    store: Store, config: Config, session: aiohttp.ClientSession
) -> None:
    sim = simulator(schema_version="4.9")
    async with served(sim) as url:
        listener = listener_with(session, config, store, url=url, deletions=False)
        with capture_logs() as logs:
            await listener.sweep_all()
            sim.advance(5)
            sim.touch("publication", sim.object_ids("publication")[0])
            await listener.sweep_all()
            await listener.sweep_all()
    assert [e["event"] for e in logs].count("elements.schema_fallback") == 1
    since = queries(sim, "/publications")[-1]
    assert "modified-since" in since
    assert "affected-since" not in since
    assert ("publication", str(sim.object_ids("publication")[0])) in {
        (k, key) for k, key, _, _ in await pending(store)
    }


async def test_a_restart_learns_the_schema_before_its_first_since_query(
    store: Store, config: Config, session: aiohttp.ClientSession
) -> None:
    sim = simulator(schema_version="4.9")
    async with served(sim) as url:
        await listener_with(session, config, store, url=url, deletions=False).sweep(USERS)
        restarted = listener_with(session, config, store, url=url, deletions=False)
        result = await restarted.sweep(USERS)
    assert result.complete  # an affected-since would have been an argument fault
    assert "modified-since" in queries(sim, "/users")[-1]


@pytest.mark.parametrize("namespace", [API_NS_HTTPS])
async def test_the_https_api_namespace_is_read_too(
    store: Store, config: Config, session: aiohttp.ClientSession, namespace: str
) -> None:
    sim = simulator(api_namespace=namespace)
    async with served(sim) as url:
        result = await listener_with(session, config, store, url=url).sweep(USERS)
    assert result.events_added == len(sim.object_ids("user"))


# ----------------------------------------------------------------------- cache control


async def test_with_detail_ref_unchanged_objects_are_answered_304_and_give_no_event(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    telemetry = Telemetry()
    listener = listener_with(
        session,
        config,
        store,
        telemetry=telemetry,
        detail="ref",
        per_page=100,
        lookback=0,
        relationships=[],
    )
    await listener.sweep(PUBLICATIONS)
    publications = elements_sim.object_ids("publication")
    assert len(await pending(store)) == len(publications)
    async with store.reading() as conn:
        kept = await http_validators.get(
            conn, f"{elements_settings(config).url}/publications/{publications[0]}"
        )
    assert kept is not None
    assert kept.etag is not None

    # A user change affects the user's publications without modifying them.
    elements_sim.advance(5)
    user = elements_sim.object_ids("user")[0]
    elements_sim.touch("user", user)
    elements_sim.requests.clear()
    result = await listener.sweep(PUBLICATIONS)
    affected = [target for _, target in elements_sim.requests if "/publications/" in target]
    assert affected  # listed again, fetched again ...
    assert result.events_added == 0  # ... and found unchanged
    assert telemetry.requests[("elements", "GET", "304")] == len(affected)

    elements_sim.advance(5)
    elements_sim.touch("publication", publications[0], title="Really changed")
    result = await listener.sweep(PUBLICATIONS)
    assert result.events_added == 1


async def test_with_detail_ref_objects_whose_relationships_are_read_are_fetched_whole(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, detail="ref", per_page=100, lookback=0)
    await listener.sweep(PUBLICATIONS)
    publication = elements_sim.object_ids("publication")[0]
    user = elements_sim.object_ids("user")[0]
    elements_sim.advance(5)
    elements_sim.relate(publication, user)  # affects the publication, modifies nothing
    elements_sim.requests.clear()
    result = await listener.sweep(PUBLICATIONS)
    assert result.events_added == 1
    async with store.reading() as conn:
        events = await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
    (event,) = [e for e in events if e.key == str(publication)]
    related = {(r["category"], r["id"]) for r in event.payload["relationships"]}
    assert ("user", str(user)) in related


async def test_a_conditional_get_of_one_object(
    elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    assert config.elements is not None
    client = ElementsClient(session, config.elements, telemetry=Telemetry())
    publication = str(elements_sim.object_ids("publication")[0])
    first = await client.get_object("publications", publication)
    assert first.obj is not None
    assert first.obj.payload["fields"]["title"]
    same = await client.get_object("publications", publication, first.validators)
    assert same.obj is None
    by_date = await client.get_object(
        "publications",
        publication,
        http_validators.Validators(None, first.validators.last_modified),
    )
    assert by_date.obj is None
    elements_sim.advance(5)
    elements_sim.touch("publication", int(publication), title="Changed")
    changed = await client.get_object("publications", publication, first.validators)
    assert changed.obj is not None
    assert changed.obj.payload["fields"]["title"] == "Changed"


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (409, "concurrency conflict"),
        (500, "server fault"),
        (504, "database timeout"),
        # The code decides over the status: a database timeout behind a plain 500.
        (500, "database timeout"),
    ],
)
async def test_error_feeds_that_may_pass_are_retried(
    store: Store,
    elements_sim: ElementsSimulator,
    config: Config,
    session: aiohttp.ClientSession,
    no_backoff: list[float | None],
    status: int,
    code: str,
) -> None:
    elements_sim.fail_next(status, code)
    result = await listener_with(session, config, store).sweep(USERS)
    assert result.complete
    assert len(elements_sim.requests) == 2


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "argument fault", PermanentError),
        (404, "resource not found", NotFoundError),
        (410, "resource deleted", NotFoundError),
        (500, "argument fault", PermanentError),
    ],
)
async def test_error_feeds_that_will_not_pass_are_not_retried(
    store: Store,
    elements_sim: ElementsSimulator,
    config: Config,
    session: aiohttp.ClientSession,
    no_backoff: list[float | None],
    status: int,
    code: str,
    error: type[Exception],
) -> None:
    elements_sim.fail_next(status, code)
    with pytest.raises(error, match=code) as caught:
        await listener_with(session, config, store).sweep(USERS)
    assert not getattr(caught.value, "retriable", True)
    assert len(elements_sim.requests) == 1


async def test_retry_after_is_the_floor_of_the_backoff(
    store: Store,
    elements_sim: ElementsSimulator,
    config: Config,
    session: aiohttp.ClientSession,
    no_backoff: list[float | None],
) -> None:
    elements_sim.fail_next(504, "database timeout", retry_after=7)
    await listener_with(session, config, store).sweep(USERS)
    assert no_backoff == [7.0]


async def test_a_page_that_keeps_failing_leaves_the_cursor_and_resumes_later(
    store: Store,
    elements_sim: ElementsSimulator,
    config: Config,
    session: aiohttp.ClientSession,
    no_backoff: list[float | None],
) -> None:
    paged = listener_with(session, config, store, per_page=2, categories=["users"])
    elements_sim.truncate_next(count=REQUEST_ATTEMPTS)
    await paged.sweep_all()
    cursor = await cursor_of(store, "elements:users")
    assert cursor.high_water is None
    assert cursor.last_error is not None
    assert "malformed XML" in cursor.last_error
    assert await pending(store) == []

    await paged.sweep_all()
    cursor = await cursor_of(store, "elements:users")
    assert cursor.last_error is None
    assert cursor.high_water is not None
    assert len(await pending(store)) == len(elements_sim.object_ids("user"))


async def test_timeouts_and_dropped_connections_are_retried(
    store: Store,
    elements_sim: ElementsSimulator,
    config: Config,
    session: aiohttp.ClientSession,
    no_backoff: list[float | None],
) -> None:
    telemetry = Telemetry()
    listener = listener_with(session, config, store, timeout=0.2, telemetry=telemetry)
    elements_sim.stall_next(0.3)
    # aiohttp repeats a GET once by itself when the server drops it; the second drop is ours.
    elements_sim.drop_next(2)
    result = await listener.sweep(USERS)
    assert result.complete
    failures = {status for (_, _, status), _ in telemetry.requests.items()}
    assert "TimeoutError" in failures
    assert "ServerDisconnectedError" in failures
    assert len(no_backoff) >= 2  # a busy machine may time out once more


async def test_wrong_credentials_park_every_feed_without_a_hot_loop(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, password="wrong-password", park_duration=60)
    with capture_logs() as logs:
        await listener.sweep_all()
        asked = len(elements_sim.requests)
        await listener.sweep_all()
    assert asked == len(listener.feeds) - 2  # deletion feeds had nowhere to start yet
    assert len(elements_sim.requests) == asked  # parked: no request at all
    parked = [e for e in logs if e["event"] == "credentials.rejected"]
    assert {e["feed"] for e in parked} == {"elements:users", "elements:publications"}
    cursor = await cursor_of(store, "elements:users")
    assert cursor.parked_until is not None
    assert cursor.parked_until > datetime.now(UTC) + timedelta(seconds=50)
    assert cursor.last_error is not None
    assert "invalid credentials" in cursor.last_error
    assert "wrong-password" not in cursor.last_error
    async with store.reading() as conn:
        assert await inbox.pending_count(conn) == 0


async def test_a_parked_feed_is_tried_again_after_its_park_and_then_unparked(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, categories=["users"], park_duration=0.05)
    elements_sim.fail_next(403, "unlicensed component")
    await listener.sweep_all()
    assert (await cursor_of(store, "elements:users")).parked_until is not None
    await asyncio.sleep(0.1)
    with capture_logs() as logs:
        await listener.sweep_all()
    cursor = await cursor_of(store, "elements:users")
    assert cursor.parked_until is None
    assert cursor.last_error is None
    assert cursor.high_water is not None
    assert "elements.feed_unparked" in [e["event"] for e in logs]


async def test_a_restart_asks_again_at_once_since_that_is_what_follows_a_corrected_secret(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    refused = listener_with(
        session, config, store, categories=["users"], password="wrong-password", park_duration=60
    )
    await refused.sweep_all()
    assert (await cursor_of(store, "elements:users")).parked_until is not None
    restarted = listener_with(session, config, store, categories=["users"], park_duration=60)
    await restarted.sweep_all()
    cursor = await cursor_of(store, "elements:users")
    assert cursor.parked_until is None
    assert cursor.last_error is None
    assert cursor.high_water is not None


async def test_one_parked_category_does_not_stop_the_others(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, deletions=False)
    elements_sim.fail_next(403, "unauthorised access")  # the first feed: users
    await listener.sweep_all()
    assert (await cursor_of(store, "elements:users")).parked_until is not None
    publications = await cursor_of(store, "elements:publications")
    assert publications.parked_until is None
    assert publications.high_water is not None


async def test_api_warnings_on_a_success_are_logged_with_their_field(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    elements_sim.warn_next("isbn-13", 'Failed to parse valid ISBN-13 from "0123456789".')
    with capture_logs() as logs:
        result = await listener_with(session, config, store).sweep(PUBLICATIONS)
    assert result.complete
    warnings = [e for e in logs if e["event"] == "elements.api_warning"]
    assert warnings
    assert {(e["field"], e["log_level"]) for e in warnings} == {("isbn-13", "warning")}


# ----------------------------------------------------------------------- pagination


async def test_a_pagination_loop_ends_the_sweep_and_leaves_the_cursor(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, per_page=3, categories=["publications"])
    await listener.sweep_all()
    high_water = (await cursor_of(store, "elements:publications")).high_water
    elements_sim.advance(30)
    for publication in elements_sim.object_ids("publication")[:7]:
        elements_sim.touch("publication", publication)
    elements_sim.loop_next_links()
    elements_sim.requests.clear()
    async with asyncio.timeout(5):
        await listener.sweep_all()
    assert len(queries(elements_sim, "/publications")) == 2  # page 1, page 2 → page 1: stop
    cursor = await cursor_of(store, "elements:publications")
    assert cursor.high_water == high_water
    assert cursor.next_url is None
    assert cursor.last_error is not None
    assert "loops back" in cursor.last_error


async def test_a_next_link_on_another_host_is_moved_to_the_configured_one(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    elements_sim.next_links_on("http://elements-internal.invalid:8091")
    with capture_logs() as logs:
        result = await listener_with(session, config, store, per_page=4).sweep(PUBLICATIONS)
    assert result.complete
    assert result.pages > 2
    assert result.events_added == len(elements_sim.object_ids("publication"))
    rewritten = [e for e in logs if e["event"] == "elements.link_rewritten"]
    assert [(e["link_host"], e["log_level"]) for e in rewritten] == [
        ("elements-internal.invalid:8091", "warning")
    ]


# ----------------------------------------------------------------------- safety


async def test_a_doctype_fails_the_page_and_reads_no_file(
    store: Store,
    elements_sim: ElementsSimulator,
    config: Config,
    session: aiohttp.ClientSession,
    no_backoff: list[float | None],
) -> None:
    secret = config.state.path.parent / "secret.txt"
    secret.write_text("TOP-SECRET")
    hostile = (
        f'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<feed xmlns:api="http://www.symplectic.co.uk/publications/api">'
        "<api:schema-version>&x;</api:schema-version></feed>"
    ).encode()
    for _ in range(REQUEST_ATTEMPTS):
        elements_sim.serve_next(hostile)
    await listener_with(session, config, store, categories=["users"]).sweep_all()
    cursor = await cursor_of(store, "elements:users")
    assert cursor.last_error is not None
    assert "DOCTYPE" in cursor.last_error
    assert "TOP-SECRET" not in cursor.last_error
    assert cursor.high_water is None
    assert await pending(store) == []


async def test_a_response_above_the_size_cap_is_refused(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    cap = 64 * 1024
    elements_sim.serve_next(b"<feed>" + b" " * cap + b"</feed>")
    await listener_with(
        session, config, store, categories=["users"], max_response_bytes=cap
    ).sweep_all()
    cursor = await cursor_of(store, "elements:users")
    assert cursor.last_error is not None
    assert "larger than 65536 bytes" in cursor.last_error
    assert cursor.high_water is None
    assert len(elements_sim.requests) == 1  # not retried: it would be as large again


async def test_requests_keep_the_configured_gap(
    store: Store, elements_sim: ElementsSimulator, config: Config, session: aiohttp.ClientSession
) -> None:
    listener = listener_with(session, config, store, per_page=5, request_gap=0.02)
    started = time.monotonic()
    result = await listener.sweep(PUBLICATIONS)
    assert result.pages >= 5
    assert time.monotonic() - started >= 0.02 * (result.pages - 1)
