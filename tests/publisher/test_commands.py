from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from crisync.config.model import CommandsConfig, MqttConfig
from crisync.errors import ErrorInfo, PermanentError
from crisync.lifecycle import Lifecycle
from crisync.publisher.commands import Command, Commands, ResyncAction
from crisync.publisher.mqtt import Publisher
from crisync.sim.broker import MosquittoBroker
from crisync.state import dead_letters, inbox, outbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.events import claim_one, enqueue, publication
from tests.support.mqtt import Received, problems_with, send_command, subscribed
from tests.support.wait import until

PREFIX = "crisync-cmd"


async def make_dead_letter(store: Store, key: str) -> None:
    await enqueue(store, publication(key, f"Paper {key}"))
    event = await claim_one(store)
    async with store.transaction() as conn:
        await inbox.complete(conn, event, state="dead")
        await dead_letters.add(conn, event, ErrorInfo("PermanentError", 400, "pure: bad"), 1)


def commands_for(
    store: Store, *, resync: ResyncAction | None = None, prefix: str = PREFIX
) -> Commands:
    return Commands(
        CommandsConfig(),
        store,
        topic_prefix=prefix,
        life=Lifecycle(outbox_ready=asyncio.Event(), handlers_done=asyncio.Event()),
        resync=resync,
    )


async def answers(store: Store) -> list[dict[str, Any]]:
    """The answers queued in the outbox, each checked against the result schema."""
    async with store.reading() as conn:
        queued = await outbox.oldest(conn, 100)
    for message in queued:
        assert problems_with(message.topic, message.payload.encode()) == []
        assert message.topic == f"{PREFIX}/cmd/result"
        assert not message.retain
    return [json.loads(message.payload) for message in queued]


def retry(body: object, *, retained: bool = False) -> Command:
    return Command("retry", json.dumps(body).encode(), retained)


async def test_retry_of_one_key_puts_it_back_and_answers_with_the_request_id(store: Store) -> None:
    await make_dead_letter(store, "1")
    await make_dead_letter(store, "2")
    commands = commands_for(store)
    result = await commands.carry_out(retry({"key": "elements/publication/1", "request_id": "r1"}))
    assert result.ok
    assert await answers(store) == [
        {
            "schema": "crisync.command-result/1",
            "command": "retry",
            "request_id": "r1",
            "ok": True,
            "message": "requeued 1 dead letter(s); 0 dropped as superseded by a newer change",
        }
    ]
    async with store.reading() as conn:
        assert [d.key for d in await dead_letters.all_dead_letters(conn)] == ["2"]
        assert await inbox.pending_count(conn) == 1


async def test_retry_of_all_and_of_an_unknown_key(store: Store) -> None:
    await make_dead_letter(store, "1")
    await make_dead_letter(store, "2")
    commands = commands_for(store)
    assert not (await commands.carry_out(retry({"key": "elements/publication/9"}))).ok
    assert (await commands.carry_out(retry({"all": True}))).ok
    first, second = await answers(store)
    assert first["message"] == "no dead letter for elements/publication/9"
    assert first["request_id"] is None
    assert second["message"].startswith("requeued 2 dead letter(s)")
    async with store.reading() as conn:
        assert await dead_letters.count(conn) == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"retry everything", "invalid command: Invalid JSON"),
        (b'{"all": true, "key": "elements/publication/1", "request_id": "r2"}', "either"),
        (b'{"all": false, "request_id": "r2"}', "either"),
        (b'{"key": "1042", "request_id": "r2"}', "key: String should match pattern"),
        (b'{"all": true, "force": true, "request_id": "r2"}', "force: Extra inputs"),
    ],
)
async def test_an_invalid_body_is_refused_with_its_reason(
    store: Store, payload: bytes, reason: str
) -> None:
    await make_dead_letter(store, "1")
    result = await commands_for(store).carry_out(Command("retry", payload, False))
    assert not result.ok
    assert reason in result.message
    assert result.request_id == ("r2" if b"r2" in payload else None)
    async with store.reading() as conn:
        assert await dead_letters.count(conn) == 1
    assert len(await answers(store)) == 1


async def test_a_retained_command_is_not_carried_out(store: Store) -> None:
    await make_dead_letter(store, "1")
    result = await commands_for(store).carry_out(retry({"all": True}, retained=True))
    assert not result.ok
    assert "retained" in result.message
    async with store.reading() as conn:
        assert await dead_letters.count(conn) == 1


async def test_resync_calls_the_action_it_was_given(store: Store) -> None:
    asked: list[tuple[str, str, str]] = []

    async def resync(source: str, kind: str, key: str) -> str:
        asked.append((source, kind, key))
        if key == "gone":
            raise PermanentError("no such object", api="elements", status=404)
        if key == "bug":
            raise KeyError(key)
        return f"{source}/{kind}/{key} queued"

    commands = commands_for(store, resync=resync)
    results = [
        await commands.carry_out(
            Command(
                "resync",
                json.dumps({"source": "elements", "kind": "user", "key": key}).encode(),
                False,
            )
        )
        for key in ("7", "gone", "bug")
    ]
    assert asked == [
        ("elements", "user", "7"),
        ("elements", "user", "gone"),
        ("elements", "user", "bug"),
    ]
    assert [(r.ok, r.message) for r in results] == [
        (True, "elements/user/7 queued"),
        (False, "no such object"),
        (False, "internal error: KeyError"),
    ]
    assert len(await answers(store)) == 3


async def test_resync_without_an_action_says_it_is_not_available(store: Store) -> None:
    body = {"source": "elements", "kind": "user", "key": "7", "request_id": "r3"}
    result = await commands_for(store).carry_out(
        Command("resync", json.dumps(body).encode(), False)
    )
    assert (result.ok, result.request_id) == (False, "r3")
    assert "not available" in result.message


@dataclass(frozen=True)
class Connected:
    """The publisher and the commands loop as the daemon builds them."""

    commands: Commands
    publisher: Publisher
    until: asyncio.Event  # the commands loop ends
    writers_done: asyncio.Event  # then the publisher drains and ends


def connected(
    broker: MosquittoBroker,
    store: Store,
    prefix: str,
    protocol: str = "3.1.1",
    resync: ResyncAction | None = None,
) -> Connected:
    outbox_ready, until, writers_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    commands = Commands(
        CommandsConfig(),
        store,
        topic_prefix=prefix,
        life=Lifecycle(outbox_ready=outbox_ready, handlers_done=until),
        resync=resync,
    )
    config = MqttConfig(
        url=broker.url,
        topic_prefix=prefix,
        client_id=f"daemon-{prefix}",
        protocol=protocol,
    )
    publisher = Publisher(
        config,
        store,
        life=Lifecycle(outbox_ready=outbox_ready, outbox_closed=writers_done),
        telemetry=Telemetry(),
        inbound=commands,
    )
    return Connected(commands, publisher, until, writers_done)


@contextlib.asynccontextmanager
async def crisync_connected(
    broker: MosquittoBroker,
    store: Store,
    prefix: str,
    protocol: str = "3.1.1",
    resync: ResyncAction | None = None,
) -> AsyncIterator[None]:
    """The publisher and the commands loop as the daemon runs them, until the block ends."""
    parts = connected(broker, store, prefix, protocol, resync)
    async with asyncio.TaskGroup() as group:
        commands_loop = group.create_task(parts.commands.run())
        group.create_task(parts.publisher.run())
        try:
            yield
        finally:
            parts.until.set()
            await commands_loop
            parts.writers_done.set()


def last_status(received: Received, prefix: str) -> bytes | None:
    statuses = received.on_topic(f"{prefix}/status")
    return statuses[-1][1] if statuses else None


def answered(received: Received, prefix: str, request_id: str) -> bool:
    return any(a["request_id"] == request_id for a in received.documents(f"{prefix}/cmd/result"))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_commands_over_mqtt_are_answered_and_wait_in_the_session_while_crisync_is_away(
    store: Store, broker: MosquittoBroker, topic_prefix: str, protocol: str
) -> None:
    await make_dead_letter(store, "1")
    await make_dead_letter(store, "2")
    retry_topic = f"{topic_prefix}/cmd/retry"
    async with subscribed(broker.port, f"{topic_prefix}/#") as received:
        async with crisync_connected(broker, store, topic_prefix, protocol):
            # `online` comes once the command topics are subscribed.
            await received.wait_for(lambda r: last_status(r, topic_prefix) == b"online")
            await send_command(
                broker.port, retry_topic, {"key": "elements/publication/1", "request_id": "up"}
            )
            await received.wait_for(lambda r: answered(r, topic_prefix, "up"))
        await received.wait_for(lambda r: last_status(r, topic_prefix) == b"offline")
        await send_command(broker.port, retry_topic, {"all": True, "request_id": "away"})
        async with crisync_connected(broker, store, topic_prefix, protocol):
            await received.wait_for(lambda r: answered(r, topic_prefix, "away"))
    results = received.documents(f"{topic_prefix}/cmd/result")
    assert [(a["request_id"], a["ok"], a["message"][:10]) for a in results] == [
        ("up", True, "requeued 1"),
        ("away", True, "requeued 1"),
    ]
    async with store.reading() as conn:
        assert await dead_letters.count(conn) == 0


def test_only_allowed_commands_are_subscribed(store: Store) -> None:
    commands = Commands(
        CommandsConfig(allow=["retry"]),
        store,
        topic_prefix=PREFIX,
        life=Lifecycle(outbox_ready=asyncio.Event(), handlers_done=asyncio.Event()),
        resync=None,
    )
    assert commands.topics == [f"{PREFIX}/cmd/retry"]


async def test_commands_left_when_crisync_stops_are_answered_not_carried_out(
    store: Store,
) -> None:
    await make_dead_letter(store, "1")
    topic = f"{PREFIX}/cmd/retry"
    until = asyncio.Event()
    commands = Commands(
        CommandsConfig(),
        store,
        topic_prefix=PREFIX,
        life=Lifecycle(outbox_ready=asyncio.Event(), handlers_done=until),
        resync=None,
    )
    acknowledged: list[str] = []
    until.set()
    commands.deliver(
        topic,
        b'{"all": true, "request_id": "late"}',
        retained=False,
        acknowledge=lambda: acknowledged.append("late"),
    )
    await commands.run()
    # After the loop closed: neither answered nor acknowledged, so the broker keeps it.
    commands.deliver(
        topic,
        b'{"all": true, "request_id": "later"}',
        retained=False,
        acknowledge=lambda: acknowledged.append("later"),
    )
    (answer,) = await answers(store)
    assert (answer["request_id"], answer["ok"]) == ("late", False)
    assert "stopping" in answer["message"]
    assert acknowledged == ["late"]
    async with store.reading() as conn:
        assert await dead_letters.count(conn) == 1


def queued_resyncs() -> tuple[list[tuple[str, str, str]], ResyncAction]:
    """A resync that queues whatever it is asked for, and the list of what it was asked."""
    asked: list[tuple[str, str, str]] = []

    async def resync(source: str, kind: str, key: str) -> str:
        asked.append((source, kind, key))
        return f"{source}/{kind}/{key} queued for replication"

    return asked, resync


async def test_a_command_crisync_died_before_carrying_out_is_delivered_again(
    store: Store, broker: MosquittoBroker, topic_prefix: str
) -> None:
    taken = asyncio.Event()

    async def dies_meanwhile(source: str, kind: str, key: str) -> str:
        taken.set()
        await asyncio.Event().wait()  # crisync dies here: the task is cancelled
        raise AssertionError("unreachable")

    asked, resync = queued_resyncs()

    body = {"source": "elements", "kind": "publication", "key": "1042", "request_id": "r"}
    async with subscribed(broker.port, f"{topic_prefix}/#") as received:
        dying = connected(broker, store, topic_prefix, resync=dies_meanwhile)
        first_life = asyncio.gather(dying.commands.run(), dying.publisher.run())
        await received.wait_for(lambda r: last_status(r, topic_prefix) == b"online")
        await send_command(broker.port, f"{topic_prefix}/cmd/resync", body)
        await asyncio.wait_for(taken.wait(), 10)
        first_life.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first_life

        async with crisync_connected(broker, store, topic_prefix, resync=resync):
            await received.wait_for(lambda r: answered(r, topic_prefix, "r"))
    assert asked == [("elements", "publication", "1042")]
    (answer,) = received.documents(f"{topic_prefix}/cmd/result")
    assert answer["ok"]


async def test_a_command_arriving_after_the_commands_loop_closed_is_delivered_again(
    store: Store, broker: MosquittoBroker, topic_prefix: str
) -> None:
    asked, resync = queued_resyncs()

    body = {"source": "elements", "kind": "publication", "key": "1042", "request_id": "late"}
    async with subscribed(broker.port, f"{topic_prefix}/#") as received:
        stopping = connected(broker, store, topic_prefix, resync=resync)
        publishing = asyncio.create_task(stopping.publisher.run())
        commands_loop = asyncio.create_task(stopping.commands.run())
        await received.wait_for(lambda r: last_status(r, topic_prefix) == b"online")
        # crisync stops: the commands loop closes first, the connection drains the outbox.
        stopping.until.set()
        await commands_loop
        with structlog.testing.capture_logs() as logs:
            await send_command(broker.port, f"{topic_prefix}/cmd/resync", body)
            await until(lambda: any(e["event"] == "command.left_for_next_start" for e in logs))
        stopping.writers_done.set()
        await publishing
        await received.wait_for(lambda r: last_status(r, topic_prefix) == b"offline")
        assert asked == []
        assert received.documents(f"{topic_prefix}/cmd/result") == []

        async with crisync_connected(broker, store, topic_prefix, resync=resync):
            await received.wait_for(lambda r: answered(r, topic_prefix, "late"))
    assert asked == [("elements", "publication", "1042")]
    (answer,) = received.documents(f"{topic_prefix}/cmd/result")
    assert answer["ok"]
