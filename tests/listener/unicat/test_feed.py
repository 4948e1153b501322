"""The Unicat listener: the sync stream into the inbox, both cursors with each page."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from pydantic import SecretStr

from crisync.handlers.pure.sim import PureSimulator
from crisync.lifecycle import Lifecycle
from crisync.listener.base import REQUEST_ATTEMPTS
from crisync.listener.unicat.feed import UnicatListener
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.state import cursors, sync_cursors
from crisync.state.store import Store, iso_utc
from tests.support.unicat import UNICAT_API_KEY, UNICAT_PROJECT, listener_for, unicat_settings

FEED = f"unicat:{UNICAT_PROJECT}"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("crisync.backoff.full_jitter", lambda *_, **__: 0.0)


def listener_with(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    *,
    life: Lifecycle | None = None,
    **changes: Any,
) -> UnicatListener:
    settings = unicat_settings(unicat_url, **changes)
    return listener_for(session, settings, store, life=life)


@pytest.fixture
def listener(
    session: aiohttp.ClientSession, store: Store, unicat_url: str, pure_sim: PureSimulator
) -> UnicatListener:
    return listener_with(session, store, unicat_url, pure_sim)


async def inbox_rows(store: Store) -> list[dict[str, Any]]:
    async with (
        store.reading() as conn,
        conn.execute(
            """SELECT feed, source, kind, key, action, changed_at, payload
               FROM inbox LEFT JOIN inbox_payloads USING (id) ORDER BY id"""
        ) as rows,
    ):
        return [
            {
                "feed": r[0],
                "source": r[1],
                "kind": r[2],
                "key": r[3],
                "action": r[4],
                "changed_at": r[5],
                "payload": None if r[6] is None else json.loads(r[6]),
            }
            async for r in rows
        ]


async def positions(store: Store) -> tuple[int, int]:
    async with store.reading() as conn:
        position = await sync_cursors.get(conn, FEED)
    return position.cc_cursor, position.cursor


async def health(store: Store) -> cursors.Cursor:
    async with store.reading() as conn:
        return await cursors.get(conn, FEED)


def database_bytes(directory: Path) -> bytes:
    """The state database with its WAL, as a disk thief would read them."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob("state.db*")))


def mapped_gids(sim: UnicatSimulator) -> set[str]:
    return set(sim.record_gids("person")) | set(sim.record_gids("publication"))


async def test_first_poll_reads_every_page_into_the_inbox_with_both_cursors(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    with structlog.testing.capture_logs() as logs:
        result = await listener.poll()
    assert result.complete
    assert result.pages >= 2  # the history is longer than one page: "warning" was followed
    ignored = {entry["data_type"] for entry in logs if entry["event"] == "unicat.item_ignored"}
    assert ignored == {"cc.users", "definitions"}
    assert all(e["log_level"] == "debug" for e in logs if e["event"] == "unicat.item_ignored")
    rows = await inbox_rows(store)
    # Folder records have no mapping; definitions and users are not a configured data type.
    assert {row["key"] for row in rows} == mapped_gids(unicat_sim)
    # Each record is of the kind its definition names ([unicat] definitions).
    assert {(row["feed"], row["source"], row["kind"], row["action"]) for row in rows} == {
        (FEED, "unicat", "person", "upsert"),
        (FEED, "unicat", "publication", "upsert"),
    }
    assert all(row["kind"] == row["payload"]["definition"] for row in rows)
    assert result.events_added == len(rows) == len(mapped_gids(unicat_sim))
    assert await positions(store) == unicat_sim.latest_cursors()
    feed = await health(store)
    assert feed.last_error is None
    assert feed.high_water is not None
    assert feed.last_poll is not None


async def test_a_record_event_carries_its_definition_fields_and_change_time(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    await listener.poll()
    gid = unicat_sim.record_gids("person")[0]
    record = unicat_sim.record(gid)
    [row] = [row for row in await inbox_rows(store) if row["key"] == gid]
    assert row["payload"] == {
        "id": gid,
        "definition": "person",
        "definition_gid": unicat_sim.definition_gid("person"),
        "language": "en",
        "title": record["title"]["en"],
        "fields": record["fields"]["en"],
        "status": "published",
        "updated_on": record["updated_on"],
    }
    assert row["changed_at"] == iso_utc(datetime.fromtimestamp(record["updated_on"], UTC))


async def test_other_data_types_and_languages_can_be_configured(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
) -> None:
    listener = listener_with(
        session, store, unicat_url, pure_sim, data_types=["records", "definitions"], language="nl"
    )
    await listener.poll()
    rows = await inbox_rows(store)
    definitions = {row["key"]: row for row in rows if row["kind"] == "definition"}
    person = unicat_sim.definition_gid("person")
    assert set(definitions) == {
        unicat_sim.definition_gid(name) for name in ("folder", "person", "publication")
    }
    assert definitions[person]["payload"]["id"] == person
    assert definitions[person]["payload"]["data"]["name"] == "person"
    records = [row for row in rows if row["kind"] in ("person", "publication")]
    assert records
    assert {row["payload"]["language"] for row in records} == {"nl"}

    fallback = listener_with(session, store, unicat_url, pure_sim, language="fr")
    gid = unicat_sim.add_record("person", {"firstname": "Joris", "lastname": "Smit"})
    await fallback.poll()
    [row] = [row for row in await inbox_rows(store) if row["key"] == gid]
    assert row["payload"]["language"] == "en"  # not a project language: the record's first
    assert row["payload"]["fields"]["lastname"] == "Smit"


async def test_the_next_poll_adds_only_what_changed(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    await listener.poll()
    before = len(await inbox_rows(store))
    fetches = unicat_sim.request_counts["records/get"]
    gid = unicat_sim.record_gids("publication")[1]
    unicat_sim.update_record(gid, {"title": "Peat soils revisited"})
    result = await listener.poll()
    assert result.events_added == 1
    rows = await inbox_rows(store)
    assert len(rows) == before + 1
    assert rows[-1]["key"] == gid
    assert rows[-1]["payload"]["fields"]["title"] == "Peat soils revisited"
    assert unicat_sim.request_counts["records/get"] == fetches + 1
    assert (await listener.poll()).events_added == 0


async def test_a_poll_that_found_nothing_is_logged_at_debug_one_that_found_events_at_info(
    listener: UnicatListener,
) -> None:
    with structlog.testing.capture_logs() as logs:
        await listener.poll()  # the backfill
        await listener.poll()  # nothing changed since
    done = [(e["events_added"], e["log_level"]) for e in logs if e["event"] == "unicat.poll_done"]
    assert [(added > 0, level) for added, level in done] == [(True, "info"), (False, "debug")]


async def test_deletes_become_delete_events(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    await listener.poll()
    removed, trashed = unicat_sim.record_gids("person")[:2]
    unicat_sim.delete_record(removed)
    unicat_sim.delete_record(trashed, permanent=False)
    await listener.poll()
    deletes = {row["key"]: row for row in await inbox_rows(store) if row["action"] == "delete"}
    assert set(deletes) == {removed, trashed}
    assert deletes[removed]["payload"] == {"id": removed}
    assert deletes[trashed]["payload"] == {"id": trashed, "status": "deleted"}
    assert deletes[trashed]["changed_at"] == iso_utc(
        datetime.fromtimestamp(unicat_sim.record(trashed)["updated_on"], UTC)
    )


async def test_a_record_gone_before_it_was_fetched_leaves_at_most_its_delete(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
) -> None:
    gid = unicat_sim.add_record("person", {"firstname": "Kees", "lastname": "Kort"})
    unicat_sim.delete_record(gid)
    # Its kind is its definition, which nothing read: there is nothing of it to delete.
    await listener_with(session, store, unicat_url, pure_sim).poll()
    assert [row["action"] for row in await inbox_rows(store) if row["key"] == gid] == []
    # Every record of one kind: its delete is news, of kind record.
    async with Store.open(tmp_path / "every-record.db") as other:
        await listener_with(session, other, unicat_url, pure_sim, definitions=[]).poll()
        rows = [row for row in await inbox_rows(other) if row["key"] == gid]
    assert [(row["kind"], row["action"]) for row in rows] == [("record", "delete")]


async def test_a_version_change_is_logged_and_kept(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    await listener.poll()
    unicat_sim.set_version("2026.10.002")
    with structlog.testing.capture_logs() as logs:
        await listener.poll()
    [changed] = [entry for entry in logs if entry["event"] == "unicat.version_changed"]
    assert (changed["previous"], changed["version"]) == ("2026.09.001", "2026.10.002")
    assert changed["log_level"] == "warning"
    async with store.reading() as conn:
        assert (await sync_cursors.get(conn, FEED)).cc_version == "2026.10.002"


async def test_an_invalid_cursor_starts_the_feed_over_without_duplicates(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
) -> None:
    life = Lifecycle()
    listener = listener_with(session, store, unicat_url, pure_sim, life=life)
    await listener.poll()
    rows = await inbox_rows(store)
    unicat_sim.fail_next(1006, endpoint="sync/get")
    life.stopping.set()  # stop after the first page of the resync, to look at the feed mid-way
    with structlog.testing.capture_logs() as logs:
        partial = await listener.poll()
    assert not partial.complete
    [invalid] = [entry for entry in logs if entry["event"] == "unicat.cursor_invalid"]
    assert invalid["log_level"] == "error"
    assert invalid["action"] == "resynchronising from cursor 0"
    feed = await health(store)
    assert feed.last_error is not None
    assert "1006" in feed.last_error
    assert "resynchronising from cursor 0" in feed.last_error

    life.stopping.clear()
    done = await listener.poll()
    assert done.complete
    assert partial.events_added + done.events_added == 0  # same records, same changed_at
    assert await inbox_rows(store) == rows
    assert await positions(store) == unicat_sim.latest_cursors()
    assert (await health(store)).last_error is None


async def test_a_refused_start_of_the_stream_fails_the_poll_instead_of_looping(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    await listener.poll()
    unicat_sim.fail_next(1006, count=2, endpoint="sync/get")
    result = await listener.poll()
    assert not result.complete
    assert unicat_sim.request_counts["sync/get"] >= 1
    feed = await health(store)
    assert feed.last_error is not None
    assert "1006" in feed.last_error
    assert await positions(store) == (0, 0)
    assert (await listener.poll()).complete


async def test_server_faults_are_retried_within_the_poll(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    unicat_sim.fail_next(500, endpoint="sync/get")
    unicat_sim.fail_next(502, endpoint="sync/get")
    unicat_sim.fail_next(1002, count=2, endpoint="records/get")
    result = await listener.poll()
    assert result.complete
    assert {row["key"] for row in await inbox_rows(store)} == mapped_gids(unicat_sim)


async def test_a_request_that_times_out_is_asked_again(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
) -> None:
    listener = listener_with(session, store, unicat_url, pure_sim, timeout=0.2)
    unicat_sim.delay_next(0.4, endpoint="sync/get")
    with structlog.testing.capture_logs() as logs:
        result = await listener.poll()
    assert result.complete
    [retry] = [entry for entry in logs if entry["event"] == "feed.request_retry"]
    assert retry["error"] == "request timed out"
    assert {row["key"] for row in await inbox_rows(store)} == mapped_gids(unicat_sim)


async def test_a_page_whose_fetches_keep_failing_leaves_cursors_and_inbox_alone(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
) -> None:
    # One fetch at a time, so that every injected fault hits the same record.
    listener = listener_with(session, store, unicat_url, pure_sim, fetch_concurrency=1)
    unicat_sim.fail_next(500, count=REQUEST_ATTEMPTS, endpoint="records/get")
    result = await listener.poll()
    assert not result.complete
    assert await inbox_rows(store) == []
    assert await positions(store) == (0, 0)
    feed = await health(store)
    assert feed.last_error is not None
    assert "error 500" in feed.last_error
    assert (await listener.poll()).complete
    assert {row["key"] for row in await inbox_rows(store)} == mapped_gids(unicat_sim)
    assert (await health(store)).last_error is None


async def test_a_refused_key_parks_the_feed_instead_of_hammering_unicat(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
) -> None:
    life = Lifecycle()
    listener = listener_with(
        session,
        store,
        unicat_url,
        pure_sim,
        life=life,
        api_key=SecretStr("wrong"),
        poll_interval=0.05,
    )
    running = asyncio.create_task(listener.run(), name="test-unicat-listener")
    await asyncio.sleep(0.4)
    life.stopping.set()  # the stop signal a daemon would give
    await running
    assert unicat_sim.request_counts["auth"] == 1
    feed = await health(store)
    assert feed.last_error is not None
    assert "403" in feed.last_error
    assert feed.parked_until is not None
    parked_for = (feed.parked_until - datetime.now(UTC)).total_seconds()
    park = unicat_settings(unicat_url).park_duration
    assert park - 5 < parked_for <= park
    assert await inbox_rows(store) == []


async def test_neither_the_key_nor_a_jwt_reaches_logs_or_the_database(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator, tmp_path: Path
) -> None:
    with structlog.testing.capture_logs() as logs:
        await listener.poll()
        unicat_sim.advance(3000)  # the next answer renews the JWT
        unicat_sim.update_record(unicat_sim.record_gids("person")[0], {"lastname": "Nieuw"})
        await listener.poll()
        unicat_sim.revoke_tokens()  # and the next one needs a new /auth
        unicat_sim.fail_next(403, endpoint="auth")
        await listener.poll()
        await listener.poll()
    assert len(unicat_sim.jwts) >= 3
    secrets = [UNICAT_API_KEY, *unicat_sim.jwts]
    logged = repr(logs)
    database = await asyncio.to_thread(database_bytes, tmp_path)
    for secret in secrets:
        assert secret not in logged
        assert secret.encode() not in database
