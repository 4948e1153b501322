from __future__ import annotations

import asyncio
import json
from pathlib import Path

from crisync.config.model import MqttConfig
from crisync.publisher import Publisher
from crisync.sim.broker import MosquittoBroker
from crisync.state import outbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.mqtt import subscribed


async def fill_outbox(store: Store, prefix: str, count: int) -> None:
    async with store.transaction() as conn:
        for n in range(count):
            await outbox.add(
                conn,
                f"{prefix}/outcomes/elements/publication/{n}",
                json.dumps({"id": f"outcome-{n}"}),
            )


async def depth(store: Store) -> int:
    async with store.reading() as conn:
        return await outbox.depth(conn)


def publisher_for(
    broker: MosquittoBroker, store: Store, prefix: str, handlers_done: asyncio.Event
) -> Publisher:
    config = MqttConfig(url=broker.url, topic_prefix=prefix, client_id=f"pub-{prefix}")
    return Publisher(
        config,
        store,
        outbox_ready=asyncio.Event(),
        handlers_done=handlers_done,
        telemetry=Telemetry(),
    )


async def test_outbox_drains_to_the_broker_and_status_is_online_then_offline(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        await fill_outbox(store, topic_prefix, 150)
        done = asyncio.Event()
        async with subscribed(broker.port, f"{topic_prefix}/#") as received:
            async with asyncio.TaskGroup() as group:
                group.create_task(publisher_for(broker, store, topic_prefix, done).run())
                await received.wait_for(lambda r: len(r.outcomes()) == 150)
                done.set()
            await received.wait_for(
                lambda r: r.on_topic(f"{topic_prefix}/status")[-1][1] == b"offline"
            )
        assert await depth(store) == 0
        statuses = [payload for _, payload, _ in received.on_topic(f"{topic_prefix}/status")]
        assert statuses == [b"online", b"offline"]
        assert sorted(o["id"] for o in received.outcomes()) == sorted(
            f"outcome-{n}" for n in range(150)
        )


async def test_an_unreachable_broker_leaves_every_outcome_in_the_outbox(
    tmp_path: Path, own_broker: MosquittoBroker, topic_prefix: str
) -> None:
    own_broker.stop()
    async with Store.open(tmp_path / "state.db") as store:
        await fill_outbox(store, topic_prefix, 5)
        done = asyncio.Event()
        done.set()
        async with asyncio.timeout(20):
            await publisher_for(own_broker, store, topic_prefix, done).run()
        assert await depth(store) == 5


async def test_outcomes_wait_out_a_broker_outage(
    tmp_path: Path, own_broker: MosquittoBroker, topic_prefix: str
) -> None:
    async with Store.open(tmp_path / "state.db") as store:
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(publisher_for(own_broker, store, topic_prefix, done).run())
            await asyncio.sleep(0.5)
            own_broker.stop()
            await fill_outbox(store, topic_prefix, 20)
            await asyncio.sleep(1.5)
            assert await depth(store) == 20
            own_broker.start()
            async with subscribed(own_broker.port, f"{topic_prefix}/outcomes/#") as received:
                await received.wait_for(lambda r: len(r.outcomes()) == 20, within=60)
            done.set()
        assert await depth(store) == 0
