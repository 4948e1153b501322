from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from crisync.config.model import MqttConfig
from crisync.lifecycle import Lifecycle
from crisync.metrics import TelemetryCollector
from crisync.outcome import outcome_payload, outcome_topic
from crisync.publisher import mqtt as publisher_module
from crisync.publisher.mqtt import Publisher
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port
from crisync.state import outbox
from crisync.state.inbox import InboxEvent
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.mqtt import retained_on, session_kept, subscribed
from tests.support.proxy import relay_to
from tests.support.tls import TlsFiles, make_tls_files, password_file, tls_listener
from tests.support.wait import until

MQTT_PASSWORD = "mqtt-canary-5e1b"


def event(n: int) -> InboxEvent:
    return InboxEvent(
        n,
        "elements:publications",
        "elements",
        "publication",
        str(n),
        "upsert",
        "2026-11-01T12:00:00.000000+00:00",
        "2026-11-01T12:00:01.000000+00:00",
        {},
        0,
    )


async def fill_outbox(store: Store, prefix: str, count: int, first: int = 0) -> None:
    async with store.transaction() as conn:
        for n in range(first, first + count):
            payload = outcome_payload(
                event(n),
                action="created",
                target_type="research-outputs",
                target_uuid=str(uuid.uuid4()),
                attempts=1,
            )
            await outbox.add(conn, outcome_topic(prefix, event(n)), payload)


def feed_status(prefix: str, backlog: int) -> tuple[str, str]:
    document = {
        "schema": "crisync.feed/1",
        "feed": "elements:users",
        "high_water": "2026-11-01T12:00:00.000000+00:00",
        "last_poll": "2026-11-01T12:01:00.000000+00:00",
        "backlog": backlog,
        "last_error": None,
        "parked": False,
        "parked_until": None,
    }
    return f"{prefix}/feeds/elements:users", json.dumps(document)


def job_status(prefix: str) -> tuple[str, str]:
    document = {
        "schema": "crisync.job/1",
        "token": "7c136ddb-4dfa-4ec1-bad4-15067cbf80d9",
        "status": "processing",
        "total": 120,
        "remaining": 26,
        "created_at": "2026-11-01T12:00:00+00:00",
        "updated_at": "2026-11-01T12:00:02+00:00",
        "stalled": False,
    }
    return f"{prefix}/jobs/{document['token']}", json.dumps(document)


async def add_retained(store: Store, *messages: tuple[str, str]) -> None:
    async with store.transaction() as conn:
        for topic, payload in messages:
            await outbox.add(conn, topic, payload, retain=True)


async def depth(store: Store) -> int:
    async with store.reading() as conn:
        return await outbox.depth(conn)


async def outbox_empty(store: Store) -> bool:
    return await depth(store) == 0


def publisher_for(
    url: str,
    store: Store,
    prefix: str,
    writers_done: asyncio.Event,
    outbox_ready: asyncio.Event | None = None,
    **options: Any,
) -> Publisher:
    config = MqttConfig(url=url, topic_prefix=prefix, client_id=f"pub-{prefix}", **options)
    life = Lifecycle(outbox_closed=writers_done, outbox_ready=outbox_ready or asyncio.Event())
    return Publisher(config, store, life=life, telemetry=Telemetry())


@pytest.fixture(autouse=True)
def fast_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect soon, and look at the outbox often: these tests add rows behind its back."""
    monkeypatch.setattr(publisher_module, "RECONNECT_BASE", 0.05)
    monkeypatch.setattr(publisher_module, "RECONNECT_CAP", 0.2)
    monkeypatch.setattr(publisher_module, "IDLE_WAKE", 0.05)


def statuses(received: Any, prefix: str) -> list[bytes]:
    return [payload for _, payload, _ in received.on_topic(f"{prefix}/status")]


async def test_outbox_drains_to_the_broker_and_status_is_online_then_offline(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        await fill_outbox(store, topic_prefix, 150)
        done = asyncio.Event()
        publisher = publisher_for(broker.url, store, topic_prefix, done)
        async with subscribed(broker.port, f"{topic_prefix}/#") as received:
            async with asyncio.TaskGroup() as group:
                group.create_task(publisher.run())
                await received.wait_for(lambda r: len(r.outcomes()) == 150)
                done.set()
            await received.wait_for(lambda r: statuses(r, topic_prefix)[-1] == b"offline")
        assert await depth(store) == 0
        assert statuses(received, topic_prefix) == [b"online", b"offline"]
        assert len({o["id"] for o in received.outcomes()}) == 150


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "clean"])
async def test_the_broker_keeps_the_session_only_when_it_is_persistent(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str, protocol: str, persistent: bool
) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        await fill_outbox(store, topic_prefix, 2)
        done = asyncio.Event()
        done.set()
        publisher = publisher_for(
            broker.url, store, topic_prefix, done, protocol=protocol, persistent_session=persistent
        )
        async with asyncio.timeout(20):
            await publisher.run()
        assert await depth(store) == 0
    kept = await asyncio.to_thread(session_kept, broker.port, f"pub-{topic_prefix}")
    assert kept == persistent


async def test_an_unreachable_broker_leaves_every_outcome_in_the_outbox(
    tmp_path: Path, own_broker: MosquittoBroker, topic_prefix: str
) -> None:
    own_broker.stop()
    async with Store.open(tmp_path / "state.db") as store:
        await fill_outbox(store, topic_prefix, 5)
        done = asyncio.Event()
        done.set()
        async with asyncio.timeout(20):
            await publisher_for(own_broker.url, store, topic_prefix, done).run()
        assert await depth(store) == 5


async def test_new_outcomes_do_not_hurry_the_reconnects_to_a_broker_that_is_down(
    tmp_path: Path, own_broker: MosquittoBroker, topic_prefix: str
) -> None:
    own_broker.stop()
    async with Store.open(tmp_path / "state.db") as store:
        done, outbox_ready = asyncio.Event(), asyncio.Event()
        publisher = publisher_for(own_broker.url, store, topic_prefix, done, outbox_ready)
        with capture_logs() as logs:
            async with asyncio.timeout(20), asyncio.TaskGroup() as group:
                group.create_task(publisher.run())
                # Handlers go on meanwhile: an outcome every 50 ms for a second.
                for n in range(20):
                    await fill_outbox(store, topic_prefix, 1, first=n)
                    outbox_ready.set()
                    await asyncio.sleep(0.05)
                done.set()
        assert await depth(store) == 20
    attempts = sum(entry["event"] == "mqtt.disconnected" for entry in logs)
    # Delays of up to RECONNECT_CAP (0.2 s here) allow about ten in a second, not hundreds.
    assert attempts < 40


@pytest.mark.parametrize("persistence", [False, True], ids=["plain-broker", "persistent-broker"])
async def test_every_outcome_arrives_after_the_broker_was_down_a_while(
    tmp_path: Path, topic_prefix: str, persistence: bool
) -> None:
    broker = MosquittoBroker(tmp_path, persistence=persistence)
    broker.start()
    try:
        async with Store.open(tmp_path / "state.db") as store, relay_to(broker.port) as relay:
            done = asyncio.Event()
            url = f"mqtt://127.0.0.1:{relay.port}"
            async with asyncio.TaskGroup() as group:
                group.create_task(publisher_for(url, store, topic_prefix, done).run())
                async with subscribed(broker.port, f"{topic_prefix}/outcomes/#") as before:
                    # Only once the test listens: outcomes are not retained, and a publisher
                    # quicker than the subscriber would otherwise send them to nobody.
                    await fill_outbox(store, topic_prefix, 5)
                    await before.wait_for(lambda r: len(r.outcomes()) == 5)
                await until(lambda: outbox_empty(store))
                relay.stop_listening()  # so that crisync is back only once the test listens
                broker.stop()
                await fill_outbox(store, topic_prefix, 20, first=5)
                await asyncio.sleep(0.2)
                assert await depth(store) == 20
                broker.start()
                async with subscribed(broker.port, f"{topic_prefix}/#") as after:
                    await relay.listen()
                    await after.wait_for(lambda r: len(r.outcomes()) == 20)
                    await after.wait_for(lambda r: b"online" in statuses(r, topic_prefix))
                done.set()
            assert await depth(store) == 0
            assert {o["key"] for o in after.outcomes()} == {str(n) for n in range(5, 25)}
    finally:
        broker.stop()


async def test_status_feed_and_job_are_retained_again_after_the_broker_forgot_them(
    tmp_path: Path, own_broker: MosquittoBroker, topic_prefix: str
) -> None:
    feed, job = feed_status(topic_prefix, 3), job_status(topic_prefix)
    expected = {(topic, payload.encode()) for topic, payload in (feed, job)}
    expected.add((f"{topic_prefix}/status", b"online"))
    async with Store.open(tmp_path / "state.db") as store:
        await add_retained(store, feed, job)
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(publisher_for(own_broker.url, store, topic_prefix, done).run())
            assert await retained_on(own_broker.port, f"{topic_prefix}/#", 3) == expected
            own_broker.stop()  # no persistence: every retained message is gone
            own_broker.start()
            assert await retained_on(own_broker.port, f"{topic_prefix}/#", 3) == expected
            done.set()


async def test_a_superseded_retained_status_is_never_published_late(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    older, newer = feed_status(topic_prefix, 7), feed_status(topic_prefix, 0)
    async with Store.open(tmp_path / "state.db") as store:
        # Both wait in the outbox, as after an outage; only the newer may reach the broker.
        await add_retained(store, older, newer)
        done = asyncio.Event()
        done.set()
        async with subscribed(broker.port, f"{topic_prefix}/#") as received:
            await publisher_for(broker.url, store, topic_prefix, done).run()
            # The broker keeps order: once `offline` is in, so is everything before it.
            await received.wait_for(lambda r: statuses(r, topic_prefix)[-1:] == [b"offline"])
        assert await depth(store) == 0
    assert {m[1].decode() for m in received.on_topic(f"{topic_prefix}/feeds/")} == {newer[1]}


async def test_a_publish_whose_acknowledgement_was_lost_is_sent_again(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    async with Store.open(tmp_path / "state.db") as store, relay_to(broker.port) as relay:
        done = asyncio.Event()
        url = f"mqtt://127.0.0.1:{relay.port}"
        publisher = publisher_for(url, store, topic_prefix, done, publish_timeout=0.3)
        async with (
            subscribed(broker.port, f"{topic_prefix}/outcomes/#") as received,
            asyncio.TaskGroup() as group,
        ):
            group.create_task(publisher.run())
            await fill_outbox(store, topic_prefix, 1)
            await until(lambda: outbox_empty(store))
            relay.swallow_replies_of_open_connections()
            await fill_outbox(store, topic_prefix, 5, first=1)
            # The broker has them, but the acknowledgements never arrive: maybe sent, so
            # after the timeout the publisher reconnects and sends them again.
            await received.wait_for(lambda r: len(r.outcomes()) >= 11, within=10)
            done.set()
        assert await depth(store) == 0
    repeats = Counter(o["id"] for o in received.outcomes())
    assert sorted(repeats.values()) == [1] + [2] * 5


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[tuple[MosquittoBroker, int]]:
    """The test's plain listener, and a TLS one that wants a client certificate and a password."""
    tls_port = free_port()
    passwords = password_file(tmp_path / "passwords", "crisync", MQTT_PASSWORD)
    running = MosquittoBroker(tmp_path, more_listeners=tls_listener(tls_port, tls_files, passwords))
    running.start()
    yield running, tls_port
    running.stop()


async def test_mqtts_with_a_client_certificate_and_a_password(
    tmp_path: Path,
    tls_broker: tuple[MosquittoBroker, int],
    tls_files: TlsFiles,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, tls_port = tls_broker
    async with Store.open(tmp_path / "state.db") as store:
        await fill_outbox(store, topic_prefix, 3)
        done = asyncio.Event()
        done.set()
        publisher = publisher_for(
            f"mqtts://127.0.0.1:{tls_port}",
            store,
            topic_prefix,
            done,
            protocol="5",
            ca_file=tls_files.ca,
            cert_file=tls_files.client_cert,
            key_file=tls_files.client_key,
            username="crisync",
            password=MQTT_PASSWORD,
        )
        caplog.set_level(logging.DEBUG)
        async with subscribed(broker.port, f"{topic_prefix}/#") as received:
            async with asyncio.timeout(20):
                await publisher.run()
            await received.wait_for(lambda r: len(r.outcomes()) == 3)
        assert await depth(store) == 0
    assert MQTT_PASSWORD not in caplog.text


async def test_a_refused_password_is_reported_and_every_outcome_stays(
    tmp_path: Path,
    tls_broker: tuple[MosquittoBroker, int],
    tls_files: TlsFiles,
    topic_prefix: str,
) -> None:
    _, tls_port = tls_broker
    async with Store.open(tmp_path / "state.db") as store:
        await fill_outbox(store, topic_prefix, 3)
        done = asyncio.Event()
        publisher = publisher_for(
            f"mqtts://127.0.0.1:{tls_port}",
            store,
            topic_prefix,
            done,
            ca_file=tls_files.ca,
            cert_file=tls_files.client_cert,
            key_file=tls_files.client_key,
            username="crisync",
            password="not-" + MQTT_PASSWORD,
        )
        with capture_logs() as logs:
            async with asyncio.timeout(20), asyncio.TaskGroup() as group:
                group.create_task(publisher.run())
                await until(lambda: any(e["event"] == "mqtt.connect_refused" for e in logs))
                done.set()
        assert await depth(store) == 3
    refused = next(entry for entry in logs if entry["event"] == "mqtt.connect_refused")
    assert "not authorized" in refused["error"].lower()


async def test_reconnect_waits_about_as_long_as_the_outage_and_afresh_after_a_good_connection(
    tmp_path: Path,
    own_broker: MosquittoBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, outage = 0.1, 1.5
    monkeypatch.setattr(publisher_module, "RECONNECT_BASE", base)
    # Counted in attempts, delays would reach this cap within the outage.
    monkeypatch.setattr(publisher_module, "RECONNECT_CAP", 10.0)
    monkeypatch.setattr(publisher_module, "STABLE_CONNECTION", 0.5)

    def connections(logs: list[dict[str, Any]]) -> int:
        return sum(entry["event"] == "mqtt.connected" for entry in logs)

    def disconnects(logs: list[dict[str, Any]]) -> list[float]:
        """The delay each lost connection or failed attempt waited."""
        return [entry["retry_in"] for entry in logs if entry["event"] == "mqtt.disconnected"]

    async with Store.open(tmp_path / "state.db") as store:
        done = asyncio.Event()
        with capture_logs() as logs:
            async with asyncio.TaskGroup() as group:
                group.create_task(publisher_for(own_broker.url, store, topic_prefix, done).run())
                await until(lambda: connections(logs) == 1)
                await asyncio.sleep(0.6)  # a good connection
                own_broker.stop()
                await asyncio.sleep(outage)
                own_broker.start()
                back = time.monotonic()
                await until(lambda: connections(logs) == 2, within=outage + 1)
                first_outage = disconnects(logs)
                await asyncio.sleep(0.6)
                seen = len(logs)
                own_broker.stop()
                await until(lambda: disconnects(logs[seen:]) != [])
                second_outage_first_delay = disconnects(logs[seen:])[0]
                own_broker.start()
                done.set()
    assert time.monotonic() - back < outage + 1  # not the cap
    assert len(first_outage) > 2
    assert max(first_outage) <= outage + 0.1  # never longer than the outage so far
    assert second_outage_first_delay <= base  # a good connection ended the first outage


def broker_available(telemetry: Telemetry) -> float | None:
    """crisync_api_available{api="mqtt"} as /metrics exports it (None: not exported)."""
    family = next(
        f for f in TelemetryCollector(telemetry).collect() if f.name == "crisync_api_available"
    )
    return next((s.value for s in family.samples if s.labels == {"api": "mqtt"}), None)


async def test_the_broker_is_unavailable_in_the_metrics_while_it_is_down_and_not_unhealthy(
    tmp_path: Path, own_broker: MosquittoBroker, topic_prefix: str
) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        done, telemetry = asyncio.Event(), Telemetry()
        config = MqttConfig(url=own_broker.url, topic_prefix=topic_prefix)
        life = Lifecycle(outbox_closed=done, outbox_ready=asyncio.Event())
        publisher = Publisher(config, store, life=life, telemetry=telemetry)
        async with asyncio.TaskGroup() as group:
            group.create_task(publisher.run())
            await until(lambda: broker_available(telemetry) == 1)
            own_broker.stop()
            await until(lambda: broker_available(telemetry) == 0)
            # The outcomes wait in the outbox: /healthz stays 200 (it reads `unavailable`).
            assert telemetry.unavailable() == []
            own_broker.start()
            await until(lambda: broker_available(telemetry) == 1, within=10)
            done.set()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_two_crisyncs_with_one_client_id_are_told_loudly(
    tmp_path: Path,
    broker: MosquittoBroker,
    topic_prefix: str,
    protocol: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A connect or publish the broker cut short waits out its timeout: shortened here.
    monkeypatch.setattr(publisher_module, "CONNECT_TIMEOUT", 0.5)
    client_id = f"twin-{topic_prefix}"
    config = MqttConfig(
        url=broker.url,
        topic_prefix=topic_prefix,
        client_id=client_id,
        protocol=protocol,
        publish_timeout=0.5,
    )
    done = asyncio.Event()
    telemetries = [Telemetry(), Telemetry()]
    with capture_logs() as logs:
        async with (
            Store.open(tmp_path / "one.db") as one,
            Store.open(tmp_path / "other.db") as other,
            asyncio.TaskGroup() as group,
        ):
            for store, telemetry in zip((one, other), telemetries, strict=True):
                life = Lifecycle(outbox_closed=done, outbox_ready=asyncio.Event())
                group.create_task(Publisher(config, store, life=life, telemetry=telemetry).run())
            await until(
                lambda: any(entry["event"] == "mqtt.client_id_in_use" for entry in logs),
                within=10,
            )
            done.set()
    clash = next(entry for entry in logs if entry["event"] == "mqtt.client_id_in_use")
    assert clash["log_level"] == "error"
    assert clash["client_id"] == client_id
    assert "a second crisync with this configuration" in clash["detail"]
    # mosquitto 2.0 closes the connection without MQTT 5's "session taken over" reason.
    assert "letting crisync straight back in" in clash["evidence"]
    said = [line for telemetry in telemetries for line in telemetry.unavailable()]
    assert any(f"client id {client_id!r} is in use" in line for line in said)
