"""Unicat jobs: progress from the sync stream into the jobs table and retained MQTT topics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import structlog

from crisync.config.model import MqttConfig
from crisync.handlers.pure.sim import PureSimulator
from crisync.lifecycle import Lifecycle
from crisync.listener.unicat.feed import UnicatListener
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.publisher.mqtt import Publisher
from crisync.sim.broker import MosquittoBroker
from crisync.state import jobs, outbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.mqtt import retained_on, subscribed
from tests.support.unicat import listener_for, unicat_settings

PREFIX = "crisync"
JOB_KEYS = {
    "schema",
    "token",
    "status",
    "total",
    "remaining",
    "created_at",
    "updated_at",
    "stalled",
}


def listener_with(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    *,
    topic_prefix: str | None = PREFIX,
    **changes: Any,
) -> UnicatListener:
    settings = unicat_settings(unicat_url, **changes)
    return listener_for(session, settings, store, topic_prefix=topic_prefix)


@pytest.fixture
def listener(
    session: aiohttp.ClientSession, store: Store, unicat_url: str, pure_sim: PureSimulator
) -> UnicatListener:
    return listener_with(session, store, unicat_url, pure_sim)


async def messages(store: Store, topic: str) -> list[tuple[dict[str, Any], bool]]:
    async with store.reading() as conn:
        queued = await outbox.oldest(conn, 1000)
    return [(json.loads(m.payload), m.retain) for m in queued if m.topic == topic]


async def job(store: Store, token: str) -> jobs.Job:
    async with store.reading() as conn:
        found = await jobs.get(conn, token)
    assert found is not None
    return found


async def test_job_progress_goes_to_the_table_and_the_retained_topic(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    await listener.poll()  # the history, read before the job starts
    token = unicat_sim.save_as_new(
        [unicat_sim.definition_gid("person"), unicat_sim.definition_gid("publication")]
    )
    await listener.poll()  # the queued event, and the step the simulator made on this request
    assert (await job(store, token)).status == "processing"
    await listener.poll()
    done = await job(store, token)
    assert (done.status, done.total, done.remaining, done.stalled) == ("done", 2, 0, False)
    assert done.job == "bulk_save_as_new_schema_items"

    published = await messages(store, f"{PREFIX}/jobs/{token}")
    assert all(retain for _, retain in published)
    assert [(p["status"], p["remaining"]) for p, _ in published] == [
        ("queued", 2),
        ("processing", 1),
        ("done", 0),
    ]
    last = published[-1][0]
    assert set(last) == JOB_KEYS
    assert last["schema"] == "crisync.job/1"
    assert last["token"] == token
    assert last["total"] == 2
    assert last["stalled"] is False
    assert last["created_at"] < last["updated_at"]
    assert last["created_at"].endswith("+00:00")


async def test_a_job_without_progress_is_reported_stalled_once(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
) -> None:
    listener = listener_with(session, store, unicat_url, pure_sim, job_stall_after=0.05)
    unicat_sim.hold_jobs()
    token = unicat_sim.save_as_new([unicat_sim.definition_gid("person")])
    await listener.poll()
    assert not (await job(store, token)).stalled
    await asyncio.sleep(0.1)
    with structlog.testing.capture_logs() as logs:
        await listener.poll()
        await listener.poll()
    assert [entry["token"] for entry in logs if entry["event"] == "unicat.job_stalled"] == [token]
    assert (await job(store, token)).stalled
    published = [p for p, _ in await messages(store, f"{PREFIX}/jobs/{token}")]
    assert [(p["status"], p["stalled"]) for p in published] == [
        ("queued", False),
        ("queued", True),
    ]

    unicat_sim.hold_jobs(held=False)
    await listener.poll()
    moving = await job(store, token)
    assert (moving.status, moving.stalled) == ("done", False)
    assert (await messages(store, f"{PREFIX}/jobs/{token}"))[-1][0]["stalled"] is False


async def test_a_rejected_job_is_published_as_a_failure(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    unicat_sim.reject_next_job("the schema is locked by another user")
    token = unicat_sim.save_as_new([unicat_sim.definition_gid("person")])
    with structlog.testing.capture_logs() as logs:
        await listener.poll()
    assert (await job(store, token)).status == "rejected"
    assert (await job(store, token)).error == "the schema is locked by another user"
    assert any(entry["event"] == "unicat.job_rejected" for entry in logs)
    [(failure, retain)] = await messages(store, f"{PREFIX}/outcomes/unicat/jobs/{token}")
    assert not retain
    assert failure["schema"] == "crisync.outcome/1"
    assert (failure["source"], failure["kind"], failure["key"]) == ("unicat", "jobs", token)
    assert failure["action"] == "failed"
    assert failure["pure"] is None
    assert failure["error"]["class"] == "PermanentError"
    assert "the schema is locked by another user" in failure["error"]["message"]
    await listener.poll()  # seen again: no second failure
    assert len(await messages(store, f"{PREFIX}/outcomes/unicat/jobs/{token}")) == 1


async def test_job_events_read_again_change_nothing(
    listener: UnicatListener, store: Store, unicat_sim: UnicatSimulator
) -> None:
    token = unicat_sim.save_as_new([unicat_sim.definition_gid("person")])
    await listener.poll()
    finished = await job(store, token)
    assert finished.status == "done"
    published = await messages(store, f"{PREFIX}/jobs/{token}")
    unicat_sim.fail_next(1006, endpoint="sync/get")  # the whole stream, jobs too, comes again
    assert (await listener.poll()).complete
    assert await job(store, token) == finished
    assert await messages(store, f"{PREFIX}/jobs/{token}") == published


async def test_without_mqtt_jobs_are_tracked_but_nothing_is_queued_to_publish(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
) -> None:
    listener = listener_with(session, store, unicat_url, pure_sim, topic_prefix=None)
    unicat_sim.reject_next_job("no")
    token = unicat_sim.save_as_new([unicat_sim.definition_gid("person")])
    await listener.poll()
    assert (await job(store, token)).status == "rejected"
    async with store.reading() as conn:
        assert await outbox.depth(conn) == 0


async def drained_to(broker: MosquittoBroker, store: Store, prefix: str) -> None:
    """Everything in the outbox published, as the daemon's publisher does at its end."""
    config = MqttConfig(url=broker.url, topic_prefix=prefix, client_id=f"daemon-{prefix}")
    writers_done = asyncio.Event()
    writers_done.set()
    life = Lifecycle(outbox_ready=asyncio.Event(), outbox_closed=writers_done)
    await Publisher(config, store, life=life, telemetry=Telemetry()).run()


async def test_a_finished_job_is_cleared_from_the_broker_and_forgotten_after_a_while(
    session: aiohttp.ClientSession,
    store: Store,
    unicat_url: str,
    pure_sim: PureSimulator,
    unicat_sim: UnicatSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    listener = listener_with(
        session, store, unicat_url, pure_sim, topic_prefix=topic_prefix, job_retain_for=0.5
    )
    unicat_sim.reject_next_job("no")
    rejected = unicat_sim.save_as_new([unicat_sim.definition_gid("person")])
    done = unicat_sim.save_as_new([unicat_sim.definition_gid("person")])
    await listener.poll()
    await listener.poll()
    assert (await job(store, done)).status == "done"
    await drained_to(broker, store, topic_prefix)
    kept = await retained_on(broker.port, f"{topic_prefix}/jobs/#", 2)
    assert {topic for topic, _ in kept} == {
        f"{topic_prefix}/jobs/{rejected}",
        f"{topic_prefix}/jobs/{done}",
    }

    await listener.poll()  # within job_retain_for: kept
    async with store.reading() as conn:
        assert len(await jobs.all_jobs(conn)) == 2
    await asyncio.sleep(0.5)
    with structlog.testing.capture_logs() as logs:
        await listener.poll()
    (forgotten,) = [entry for entry in logs if entry["event"] == "unicat.jobs_forgotten"]
    assert set(forgotten["tokens"]) == {rejected, done}
    await drained_to(broker, store, topic_prefix)

    async with subscribed(broker.port, f"{topic_prefix}/jobs/#") as received:
        await asyncio.sleep(0.3)  # a retained message comes at once with the subscription
    assert received.messages == []
    async with store.reading() as conn:
        assert await jobs.all_jobs(conn) == []
        assert await outbox.retained_messages(conn) == []
