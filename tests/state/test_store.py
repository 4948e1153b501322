from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest

from crisync.state import epoch, external_persons, inbox, mapping, outbox
from crisync.state.inbox import ChangeEvent
from crisync.state.migrations import MIGRATIONS
from crisync.state.store import SchemaTooNewError, Store, iso_utc, utc_now


async def test_open_migrates_a_new_database_to_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with Store.open(path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        async with store.reading() as conn:
            async with conn.execute("PRAGMA journal_mode") as rows:
                assert (await rows.fetchone())[0] == "wal"
            async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as rows:
                tables = {row[0] async for row in rows}
    assert {"cursors", "inbox", "mapping", "outbox", "dead_letters"} <= tables


async def test_reopening_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with Store.open(path) as store, store.transaction() as conn:
        await conn.execute(
            "INSERT INTO outbox (topic, payload, created_at) VALUES ('t', 'p', 'now')"
        )
    async with (
        Store.open(path) as store,
        store.reading() as conn,
        conn.execute("SELECT COUNT(*) FROM outbox") as rows,
    ):
        assert (await rows.fetchone())[0] == 1


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with Store.open(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaTooNewError, match="newer than this crisync"):
        async with Store.open(path):
            pass


async def write_then_crash(store: Store) -> None:
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO outbox (topic, payload, created_at) VALUES ('t', 'p', 'now')"
        )
        raise RuntimeError("crash between two writes")


async def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        with pytest.raises(RuntimeError):
            await write_then_crash(store)
        async with store.reading() as conn, conn.execute("SELECT COUNT(*) FROM outbox") as rows:
            assert (await rows.fetchone())[0] == 0


async def test_reads_see_what_is_committed_without_waiting_for_an_open_transaction(
    tmp_path: Path,
) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        async with store.transaction() as conn:
            await conn.execute(
                "INSERT INTO outbox (topic, payload, created_at) VALUES ('t', 'p', 'now')"
            )
            async with asyncio.timeout(1), store.reading() as reader:
                assert await outbox.depth(reader) == 0
        async with store.reading() as reader:
            assert await outbox.depth(reader) == 1
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await reader.execute("DELETE FROM outbox")


async def test_lookups_on_the_loop_thread_see_only_what_is_committed_and_never_write(
    tmp_path: Path,
) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        async with store.transaction() as conn:
            await external_persons.put(conn, "smith j", "uuid-1")
            assert await external_persons.get(store.lookups, "smith j") is None
        assert await external_persons.get(store.lookups, "smith j") == "uuid-1"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.lookups.execute_fetchall("DELETE FROM external_persons")


async def wake_then_crash(store: Store, event: asyncio.Event) -> None:
    async with store.transaction():
        store.wake_after_commit(event)
        raise RuntimeError("rolled back")


async def test_a_waiter_is_woken_once_the_rows_it_waits_for_are_committed(
    tmp_path: Path,
) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        outbox_ready = asyncio.Event()

        async def publisher() -> int:
            await outbox_ready.wait()
            async with store.reading() as reader:
                return await outbox.depth(reader)

        reading = asyncio.create_task(publisher())
        async with store.transaction() as conn:
            await outbox.add(conn, "t", "p")
            store.wake_after_commit(outbox_ready)
            await asyncio.sleep(0)  # the waiter would run now if it were woken
            assert not outbox_ready.is_set()
        assert await reading == 1  # woken after the commit: it reads the row
        outbox_ready.clear()
        with pytest.raises(RuntimeError):
            await wake_then_crash(store, outbox_ready)
        assert outbox_ready.is_set()  # a rollback wakes too: no wake-up is ever lost
        outbox_ready.clear()
        store.wake_after_commit(outbox_ready)  # outside a transaction: at once
        assert outbox_ready.is_set()


async def test_a_read_sees_a_commit_made_while_another_reader_held_a_statement_open(
    tmp_path: Path,
) -> None:
    """An open statement pins its snapshot: a reader sharing it would miss that commit."""
    async with Store.open(tmp_path / "state.db") as store:
        committed = asyncio.Event()

        async def slow_reader() -> None:
            tables = "SELECT name FROM sqlite_master"
            async with store.reading() as conn, conn.execute(tables) as rows:
                await rows.fetchone()
                await committed.wait()

        async def writer_then_reader() -> int:
            async with store.transaction() as conn:
                await conn.execute(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES ('t', 'p', 'now')"
                )
            committed.set()
            async with store.reading() as conn:
                return await outbox.depth(conn)

        async with asyncio.timeout(5):
            reading = asyncio.create_task(slow_reader())
            await asyncio.sleep(0.05)
            assert await writer_then_reader() == 1
            await reading


async def test_a_retained_message_is_remembered_per_topic(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        async with store.transaction() as conn:
            await outbox.add(conn, "p/feeds/a", "first", retain=True)
            await outbox.add(conn, "p/feeds/a", "second", retain=True)
            await outbox.add(conn, "p/outcomes/x", "not retained")
        async with store.reading() as conn:
            assert await outbox.retained_messages(conn) == [("p/feeds/a", "second")]
            assert await outbox.depth(conn) == 3


async def test_a_cancelled_transaction_leaves_the_connection_clean(tmp_path: Path) -> None:
    """Cancellation at any await of a transaction: the next one still begins and commits."""
    async with Store.open(tmp_path / "state.db") as store:

        async def write(n: int) -> None:
            async with store.transaction() as conn:
                await conn.execute(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES (?, 'p', 'now')",
                    (f"t{n}",),
                )

        for delay in (0, 0.0001, 0.0005, 0.001, 0.002, 0.005):
            for n in range(20):
                task = asyncio.create_task(write(n))
                await asyncio.sleep(delay)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await write(999)
        async with store.reading() as conn:
            assert not conn.in_transaction
            assert await outbox.depth(conn) >= 1


async def test_version_13_keeps_the_payloads_of_pending_and_dead_events_only(
    tmp_path: Path,
) -> None:
    async with aiosqlite.connect(tmp_path / "state.db", isolation_level=None) as conn:
        for upgrade in MIGRATIONS[:12]:
            await upgrade(conn)
        await conn.executemany(
            """INSERT INTO inbox
                   (feed, source, kind, key, action, changed_at, observed_at, payload, state)
               VALUES ('f', 's', 'k', ?, 'upsert', 't', 't', ?, ?)""",
            [("1", "{}", "done"), ("2", '{"a":2}', "pending"), ("3", '{"a":3}', "dead")],
        )
        await MIGRATIONS[12](conn)
        rows = await conn.execute_fetchall(
            "SELECT key, payload FROM inbox LEFT JOIN inbox_payloads USING (id) ORDER BY id"
        )
    assert [tuple(row) for row in rows] == [("1", None), ("2", '{"a":2}'), ("3", '{"a":3}')]


T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def test_version_14_carries_every_done_event_mapping_row_and_external_person_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    body_hash = hashlib.sha256(b'{"title":"t"}').hexdigest()
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for upgrade in MIGRATIONS[:13]:
            await upgrade(conn)
        await conn.execute("INSERT INTO schema_version (version) VALUES (13)")
        await conn.executemany(
            """INSERT INTO inbox (feed, source, kind, key, action, changed_at, observed_at, state)
               VALUES ('elements:publications', 'elements', 'publication', ?, 'upsert', ?, ?, ?)""",
            [
                (key, iso_utc(T0 + timedelta(minutes=minutes)), iso_utc(T0), state)
                for key, minutes, state in [
                    ("1", 0, "done"),
                    ("1", 5, "done"),
                    ("2", 0, "dead"),
                    ("3", 0, "pending"),
                ]
            ],
        )
        await conn.execute(
            """INSERT INTO inbox_payloads (id, payload)
               SELECT id, '{"key":' || key || '}' FROM inbox WHERE state != 'done'"""
        )
        await conn.execute(
            """INSERT INTO dead_letters (inbox_id, source, kind, key, error_class, status,
                                         message, attempts, failed_at)
               SELECT id, source, kind, key, 'PermanentError', 400, 'no', 1, observed_at
               FROM inbox WHERE state = 'dead'"""
        )
        await conn.executemany(
            """INSERT INTO mapping (source, kind, key, target, target_type, target_uuid,
                   target_version, payload_hash, locked, changed_at, updated_at, match_key,
                   origin, written, foreign_identifiers)
               VALUES ('elements', ?, ?, 'pure', ?, ?, 'v1', ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                ("publication", "1", "research-outputs", "u-1", body_hash, 1, iso_utc(T0),
                 iso_utc(T0), None, "created", b"\x01" * 16, None),
                ("user", "9", "persons", "u-9", "", 0, iso_utc(T0), iso_utc(T0), "hr-9",
                 "adopted", None, '[{"idSource":"hr","value":"9"}]'),
            ],
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO external_persons (name_key, target_uuid, updated_at)
               VALUES ('smith|m', 'u-e', ?)""",
            (iso_utc(T0),),
        )
    async with Store.open(path) as store:
        async with store.reading() as conn:
            waiting = await conn.execute_fetchall(
                """SELECT key, state, payload, (SELECT COUNT(*) FROM dead_letters
                                                WHERE inbox_id = id)
                   FROM inbox LEFT JOIN inbox_payloads USING (id) ORDER BY id"""
            )
            done = await conn.execute_fetchall(
                "SELECT source, kind, key, feed, changed_at, observed_at FROM inbox_done"
            )
            rows = {
                key: await mapping.get(conn, "elements", kind, key)
                for kind, key in [("publication", "1"), ("user", "9")]
            }
            people = await external_persons.all_external_persons(conn)
        async with store.transaction() as conn:
            # A feed's repeat of a done event is dropped as before the migration.
            repeat = ChangeEvent(
                "elements:publications", "elements", "publication", "1", "upsert", T0, {}
            )
            assert await inbox.add_events(conn, [repeat], utc_now()) == 0
    assert [tuple(row) for row in waiting] == [
        ("2", "dead", '{"key":2}', 1),
        ("3", "pending", '{"key":3}', 0),
    ]
    observed = epoch.seconds(T0)
    assert sorted(tuple(row) for row in done) == [
        ("elements", "publication", "1", "elements:publications", epoch.microseconds(T0), observed),
        (
            "elements",
            "publication",
            "1",
            "elements:publications",
            epoch.microseconds(T0 + timedelta(minutes=5)),
            observed,
        ),
    ]
    publication, user = rows["1"], rows["9"]
    assert publication is not None
    assert user is not None
    assert publication.payload_hash == hashlib.sha256(b'{"title":"t"}').digest()[:16]
    assert (
        publication.target_uuid,
        publication.locked,
        publication.changed_at,
        publication.written,
    ) == ("u-1", True, iso_utc(T0), b"\x01" * 16)
    assert (user.payload_hash, user.match_key, user.origin, user.foreign_identifiers) == (
        b"",
        "hr-9",
        "adopted",
        ({"idSource": "hr", "value": "9"},),
    )
    assert people == {"smith|m": "u-e"}
