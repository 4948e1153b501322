"""End to end: the simulators, a real broker, real SQLite, the daemon as a user runs it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.sim.broker import MosquittoBroker
from crisync.sim.elements import ElementsSimulator
from crisync.sim.pure import PureSimulator
from crisync.telemetry import Telemetry
from tests.conftest import ELEMENTS_PASSWORD, PURE_API_KEY
from tests.support.config_file import write_config
from tests.support.daemon import start_daemon
from tests.support.mqtt import subscribed


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
    assert telemetry.requests[("pure", "PUT", "201")] == len(users) + len(publications)
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
            _, stderr = await daemon.communicate()
        await received.wait_for(lambda r: r.on_topic(f"{topic_prefix}/status")[-1][1] == b"offline")
    assert daemon.returncode == 0, stderr.decode()[-2000:]
    log = stderr.decode()
    assert "daemon.stopped" in log
    assert ELEMENTS_PASSWORD not in log
    assert PURE_API_KEY not in log


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
