"""End to end: the simulators, a real broker, real SQLite, the daemon as a user runs it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from crisync.config.model import CommandsConfig, Config, MetricsConfig
from crisync.daemon import Lifecycle, run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.base import Source, SourceContext
from crisync.listener.elements.sim import ElementsSimulator
from crisync.listener.elements.source import ElementsSource
from crisync.publisher import feed_status
from crisync.publisher import mqtt as publisher
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port, serve
from crisync.state import dead_letters, inbox
from crisync.state.store import StateDiskFullError, Store
from crisync.status import read_status, render_status
from crisync.systemd import status_line
from crisync.telemetry import Telemetry
from tests.support.config_file import write_config
from tests.support.daemon import daemon_log, start_daemon
from tests.support.mqtt import Received, retained_on, subscribed
from tests.support.proxy import relay_to
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY
from tests.support.wait import until

# The feeds of the fixture's configuration: each category's changes and its deletions.
FEEDS = (
    "elements:users",
    "elements:publications",
    "elements:deleted:users",
    "elements:deleted:publications",
)


@pytest.fixture
def fast_mqtt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "RECONNECT_BASE", 0.05)
    monkeypatch.setattr(publisher, "RECONNECT_CAP", 0.2)
    monkeypatch.setattr(feed_status, "REFRESH_EVERY", 0.1)


def statuses(received: Received, prefix: str) -> list[bytes]:
    return [payload for _, payload, _ in received.on_topic(f"{prefix}/status")]


def pure_writes(pure_sim: PureSimulator) -> int:
    return sum(
        n
        for (_, op), n in pure_sim.request_counts.items()
        if op in ("create", "update", "lock", "unlock", "delete")
    )


async def test_every_elements_object_becomes_one_locked_pure_object_and_one_outcome(
    config: Config,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    users = elements_sim.object_ids("user")
    publications = elements_sim.object_ids("publication")
    telemetry = Telemetry()
    async with subscribed(broker.port, f"{topic_prefix}/#") as received:
        await run_daemon(config, once=True, telemetry=telemetry)
        await received.wait_for(lambda r: len(r.outcomes()) >= len(users) + len(publications))
    assert telemetry.outcomes == {"created": len(users) + len(publications)}
    # Authors who are no user, or several (namesakes), become external persons besides.
    external_persons = len(pure_sim.objects("external-persons"))
    assert telemetry.requests[("pure", "PUT", "201")] == (
        len(users) + len(publications) + external_persons
    )
    assert telemetry.stalled() == []

    for pure_type, kind, ids, id_source in (
        ("persons", "user", users, "synchronisedUnifiedPerson"),
        ("research-outputs", "publication", publications, "synchronisedResearchOutput"),
    ):
        stored = pure_sim.objects(pure_type)
        primary_ids = sorted(
            identifier["value"]
            for obj in stored.values()
            for identifier in obj["identifiers"]
            if identifier["typeDiscriminator"] == "PrimaryId"
            and identifier["idSource"] == id_source
        )
        assert primary_ids == sorted(f"elements:{kind}:{i}" for i in ids)
        assert all(pure_sim.is_locked(pure_type, uuid) for uuid in stored)

    outcomes = received.outcomes()
    assert {(o["kind"], o["key"]) for o in outcomes} == {("user", str(i)) for i in users} | {
        ("publication", str(i)) for i in publications
    }
    assert all(o["action"] == "created" and o["schema"] == "crisync.outcome/1" for o in outcomes)

    writes_before = pure_writes(pure_sim)
    await run_daemon(config, once=True)
    assert pure_writes(pure_sim) == writes_before


async def test_a_change_in_elements_updates_pure_on_the_next_run(
    config: Config,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
) -> None:
    await run_daemon(config, once=True)
    target = elements_sim.object_ids("publication")[2]
    elements_sim.advance(2)
    elements_sim.touch("publication", target, title="A better title")
    await run_daemon(config, once=True)
    titles = [o["title"]["value"] for o in pure_sim.objects("research-outputs").values()]
    assert "A better title" in titles
    assert len(titles) == len(elements_sim.object_ids("publication"))


async def test_sigterm_drains_publishes_offline_and_exits_zero(
    tmp_path: Path,
    config: Config,
    elements_sim: ElementsSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    config_path = tmp_path / "crisync.toml"
    write_config(config_path, config, broker, topic_prefix)
    total = len(elements_sim.object_ids("user")) + len(elements_sim.object_ids("publication"))
    async with subscribed(broker.port, f"{topic_prefix}/#") as received:
        daemon = await start_daemon(config_path)
        await received.wait_for(lambda r: len(r.outcomes()) >= total, within=60)
        daemon.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await daemon.wait()
        await received.wait_for(lambda r: r.on_topic(f"{topic_prefix}/status")[-1][1] == b"offline")
    log = daemon_log(config_path).read_text()
    assert daemon.returncode == 0, log[-2000:]
    assert ELEMENTS_PASSWORD not in log
    assert PURE_API_KEY not in log
    # stderr is no terminal here, as under journald: one JSON object per line.
    lines = [json.loads(line) for line in log.splitlines()]
    assert lines[-1]["event"] == "daemon.stopped"
    pure_requests = lines[-1]["requests"]["pure"]
    assert pure_requests["requests"] >= total  # a request per object at least
    assert pure_requests["seconds"] > 0
    replicated = [line for line in lines if line["event"] == "object.replicated"]
    assert len(replicated) == total
    assert all(line["target_uuid"] and line["key"] and line["attempt"] == 1 for line in replicated)


async def test_kill_9_leaves_offline_through_the_last_will(
    tmp_path: Path,
    config: Config,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    config_path = tmp_path / "crisync.toml"
    write_config(config_path, config, broker, topic_prefix)
    async with subscribed(broker.port, f"{topic_prefix}/status") as received:
        daemon = await start_daemon(config_path)
        await received.wait_for(lambda r: any(p == b"online" for _, p, _ in r.messages), within=30)
        daemon.kill()
        await daemon.wait()
        await received.wait_for(lambda r: r.messages[-1][1] == b"offline", within=30)


def outcomes_with(received: Received, action: str) -> list[dict[str, Any]]:
    return [o for o in received.outcomes() if o["action"] == action]


def feeds(received: Received, prefix: str) -> set[str]:
    return {status["feed"] for status in received.documents(f"{prefix}/feeds/")}


@pytest.mark.usefixtures("fast_mqtt")
async def test_a_broker_outage_loses_no_outcome_and_the_retained_state_comes_back(
    tmp_path: Path,
    config: Config,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
    topic_prefix: str,
) -> None:
    total = len(elements_sim.object_ids("user")) + len(elements_sim.object_ids("publication"))
    changed = elements_sim.object_ids("publication")[:3]
    broker = MosquittoBroker(tmp_path)  # without persistence: a restart forgets everything
    broker.start()
    life = Lifecycle()
    try:
        async with relay_to(broker.port) as relay, asyncio.TaskGroup() as group:
            assert config.mqtt is not None
            mqtt = config.mqtt.model_copy(update={"url": f"mqtt://127.0.0.1:{relay.port}"})
            running = config.model_copy(update={"mqtt": mqtt})
            async with subscribed(broker.port, f"{topic_prefix}/#") as before:
                group.create_task(run_daemon(running, lifecycle=life), name="daemon")
                await before.wait_for(lambda r: len(r.outcomes()) == total)
                await before.wait_for(lambda r: len(feeds(r, topic_prefix)) == len(FEEDS))
            relay.stop_listening()  # crisync comes back only once the test listens again
            broker.stop()
            updates = pure_sim.request_counts[("research-outputs", "update")]  # rights check
            elements_sim.advance(2)
            for key in changed:
                elements_sim.touch("publication", key, title=f"Retitled {key}")
            await until(
                lambda: pure_sim.request_counts[("research-outputs", "update")] == updates + 3
            )
            broker.start()
            async with subscribed(broker.port, f"{topic_prefix}/#") as after:
                await relay.listen()
                await after.wait_for(lambda r: len(outcomes_with(r, "updated")) == 3)
                retained = await retained_on(broker.port, f"{topic_prefix}/#", 1 + len(FEEDS))
                life.stopping.set()
                await after.wait_for(lambda r: statuses(r, topic_prefix)[-1:] == [b"offline"])
    finally:
        broker.stop()
    assert {o["key"] for o in outcomes_with(after, "updated")} == {str(k) for k in changed}
    assert {topic for topic, _ in retained} == {f"{topic_prefix}/status"} | {
        f"{topic_prefix}/feeds/{feed}" for feed in FEEDS
    }


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def metric(text: str, name: str, **labels: str) -> float:
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    )


async def test_health_metrics_and_a_retry_command_while_running(
    config: Config,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> None:
    total = len(elements_sim.object_ids("user")) + len(elements_sim.object_ids("publication"))
    port = free_port()
    running = config.model_copy(
        update={"metrics": MetricsConfig(port=port), "commands": CommandsConfig()}
    )
    pure_sim.fail_next(400, content_type="research-outputs", operation="create")
    life = Lifecycle()
    url = f"http://127.0.0.1:{port}"
    async with (
        subscribed(broker.port, f"{topic_prefix}/#") as received,
        asyncio.TaskGroup() as group,
    ):
        group.create_task(run_daemon(running, lifecycle=life), name="daemon")
        await received.wait_for(lambda r: len(r.outcomes()) == total)
        (failed,) = outcomes_with(received, "failed")
        assert await get(f"{url}/healthz") == (
            200,
            '{"status": "ok", "stalled": [], "unavailable": []}',
        )
        status, text = await get(f"{url}/metrics")
        assert status == 200
        assert metric(text, "crisync_outcomes_total", action="failed") == 1
        assert metric(text, "crisync_dead_letters") == 1

        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="operator") as operator:
            body = {"all": True, "request_id": "ops-1"}
            await operator.publish(f"{topic_prefix}/cmd/retry", json.dumps(body), qos=1)
        await received.wait_for(lambda r: len(r.documents(f"{topic_prefix}/cmd/result")) == 1)
        await received.wait_for(lambda r: len(r.outcomes()) == total + 1)
        _, text = await get(f"{url}/metrics")
        life.stopping.set()
    (answer,) = received.documents(f"{topic_prefix}/cmd/result")
    assert (answer["request_id"], answer["ok"]) == ("ops-1", True)
    assert received.outcomes()[-1]["key"] == failed["key"]
    assert received.outcomes()[-1]["action"] == "created"
    assert metric(text, "crisync_dead_letters") == 0


async def test_pure_has_as_many_requests_in_flight_as_configured_and_never_more(
    config: Config,
) -> None:
    """There are more handlers than Pure slots, so the slots stay full; the client caps them."""
    assert config.pure is not None
    pure = PureSimulator(api_key=PURE_API_KEY, seed=7, latency_ms=20)
    in_flight, most = 0, 0

    @aiohttp.web.middleware
    async def count(
        request: aiohttp.web.Request, handler: aiohttp.typedefs.Handler
    ) -> aiohttp.web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    app = pure.app()
    app.middlewares.insert(0, count)
    async with serve(app) as origin:
        pure_config = config.pure.model_copy(
            update={
                "url": f"{origin}/ws/api",
                "concurrency": 3,
                "managing_organization": pure.organization_uuids[0],
            }
        )
        await run_daemon(config.model_copy(update={"pure": pure_config}), once=True)
    assert len(pure.objects("research-outputs")) == 24
    assert most == 3


class ElementsOnAFullDisk(ElementsSource):
    """The real Elements source, with SQLite's page limit set on the daemon's connection
    before its first poll: the same SQLITE_FULL as a full disk, on a real file."""

    async def start(self) -> None:
        await super().start()
        [[pages]] = await self._context.store.write("PRAGMA page_count")
        await self._context.store.write(f"PRAGMA max_page_count = {pages + 3}")


async def test_a_full_disk_stops_the_daemon_without_blaming_a_feed_or_an_object(
    config: Config,
) -> None:
    assert config.elements is not None
    elements = config.elements

    def sources(_config: Config, context: SourceContext) -> list[Source]:
        return [ElementsOnAFullDisk(elements, context)]

    with structlog.testing.capture_logs() as logged, pytest.raises(StateDiskFullError) as raised:
        await asyncio.wait_for(run_daemon(config, sources=sources), 60)
    assert raised.value.path == config.state.path
    events = {line["event"] for line in logged}
    assert not events & {"feed.crashed", "feed.failed", "handler.crashed", "object.failed"}


@dataclass(frozen=True)
class Said:
    """What a running daemon tells each place an operator looks."""

    health_status: int
    health: dict[str, Any]
    health_body: str
    metrics: str
    systemd: str
    status: list[str]
    topic: list[dict[str, Any]]  # the documents of one retained topic


async def said_everywhere(running: Config, broker: MosquittoBroker, topic: str) -> Said:
    """Run the daemon until /healthz refuses and `topic` has a document; read every place."""
    assert running.metrics is not None
    url = f"http://127.0.0.1:{running.metrics.port}"
    life = Lifecycle()
    async with (
        subscribed(broker.port, topic) as received,
        asyncio.TaskGroup() as group,
    ):
        group.create_task(run_daemon(running, lifecycle=life), name="daemon")
        await until(lambda: healthz_refuses(url), within=10)
        status, body = await get(f"{url}/healthz")
        _, text = await get(f"{url}/metrics")
        async with Store.open(running.state.path) as store:
            systemd = await status_line(store, [], stopping=False)
            lines = render_status(await read_status(store)).splitlines()
        await received.wait_for(lambda r: r.documents(topic))
        life.stopping.set()
    return Said(status, json.loads(body), body, text, systemd, lines, received.documents(topic))


@pytest.mark.usefixtures("fast_mqtt")
async def test_a_refused_elements_password_is_said_by_health_status_systemd_mqtt_and_a_metric(
    config: Config, elements_sim: ElementsSimulator, broker: MosquittoBroker, topic_prefix: str
) -> None:
    assert config.elements is not None
    wrong = config.elements.model_copy(update={"password": SecretStr("not-the-password")})
    running = config.model_copy(
        update={"elements": wrong, "metrics": MetricsConfig(port=free_port())}
    )
    said = await said_everywhere(running, broker, f"{topic_prefix}/feeds/elements:users")

    assert said.health_status == 503
    assert said.health["status"] == "unavailable"
    refused = [line for line in said.health["unavailable"] if line.startswith("elements:users ")]
    assert refused[0].startswith("elements:users refused the credentials (HTTP 401): ")
    assert "not-the-password" not in said.health_body
    assert metric(said.metrics, "crisync_feed_credentials_refused", feed="elements:users") == 1
    assert said.systemd.startswith("elements:")
    assert "refused the credentials (HTTP 401)" in said.systemd.split(" | ")[0]
    assert said.status[0].startswith("elements:")
    assert "refused the credentials (HTTP 401)" in said.status[0]
    [*_, feed] = said.topic
    assert feed["parked"] is True
    assert feed["last_error"].startswith("refused the credentials (HTTP 401): ")
    assert elements_sim.object_ids("user")  # there was work it could not read


async def test_a_refused_pure_key_is_said_by_health_status_systemd_mqtt_and_a_metric(
    config: Config, pure_sim: PureSimulator, broker: MosquittoBroker, topic_prefix: str
) -> None:
    assert config.pure is not None
    wrong = config.pure.model_copy(update={"api_key": SecretStr("not-the-key")})
    running = config.model_copy(update={"pure": wrong, "metrics": MetricsConfig(port=free_port())})
    said = await said_everywhere(running, broker, f"{topic_prefix}/apis/pure")

    assert said.health_status == 503
    assert said.health["status"] == "unavailable"
    [refused] = [line for line in said.health["unavailable"] if line.startswith("pure: ")]
    assert "refused the credentials (HTTP 401)" in refused
    assert "not-the-key" not in said.health_body
    assert metric(said.metrics, "crisync_api_available", api="pure") == 0
    assert said.systemd.startswith("pure refused the credentials (HTTP 401)")
    assert said.status[0].startswith("pure refused the credentials (HTTP 401)")
    [*_, state] = said.topic
    assert state["available"] is False
    assert state["reason"].startswith("refused the credentials (HTTP 401)")
    assert state["waiting"] > 0
    # The work waits for a key that works, with the attempts it had.
    async with Store.open(config.state.path) as store, store.reading() as conn:
        assert await dead_letters.count(conn) == 0
        waiting = await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
    assert waiting
    assert {event.attempts for event in waiting} == {0}
    assert pure_sim.objects("persons") == pure_sim.objects("research-outputs") == {}


async def healthz_refuses(url: str) -> bool:
    try:
        status, body = await get(f"{url}/healthz")
    except aiohttp.ClientConnectorError:
        return False  # not listening yet
    return status == 503 and "refused the credentials" in body


def test_the_daemon_leaves_the_simulators_and_the_contract_unimported() -> None:
    """Its memory: the Pure contract and its validator (jsonschema, YAML) are read only for
    content of another class, and the simulators never, the command line's parser included."""
    heavy = (
        "jsonschema",
        "yaml",
        "crisync.handlers.pure.openapi",
        "crisync.handlers.pure.sim",
        "crisync.listener.elements.sim",
        "crisync.listener.unicat.sim",
        "crisync.sim.all_simulators",
    )
    probe = (
        "import sys; from crisync.cli import _parser; _parser(); import crisync.daemon; "
        f"print(sorted(set(sys.modules) & {set(heavy)!r}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
