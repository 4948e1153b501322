"""`crisync demo` on a broker that might be a production one: topics and a session of its own,
and nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp
import pytest

from crisync.demo import DEMO_PREFIX, run_demo
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port
from tests.support.mqtt import session_kept, subscribed


async def test_the_demo_publishes_under_its_own_prefix_and_leaves_nothing_on_the_broker(
    broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    cleared = (f"{DEMO_PREFIX}/status", b"", False)
    async with (
        subscribed(broker.port, "crisync/#") as production,
        subscribed(broker.port, f"{DEMO_PREFIX}/#") as demo,
    ):
        assert await run_demo(objects=8, follow=False, mqtt_url=broker.url) == 0
        await demo.wait_for(lambda r: cleared in r.messages)
    assert production.messages == []
    assert len(demo.outcomes()) >= 8
    assert {topic.partition("/")[2].partition("/")[0] for topic, _, _ in demo.messages} == {
        "status",
        "feeds",
        "outcomes",
    }
    out = capsys.readouterr().out
    assert f"mosquitto_sub -h 127.0.0.1 -p {broker.port} -t '{DEMO_PREFIX}/#' -v" in out
    # The plan first, then the first pass adopts what the plan said it would.
    plan = out.split("Plan (`crisync plan`: what the first pass will do")[1].split("First pass")[0]
    assert "  Pure writes made by the plan: 0\n" in plan
    planned = re.search(r"(\d+) adopt\b", plan)
    adopted = re.search(r"outcomes: .*?(\d+) adopted", out.split("First pass")[1])
    assert planned is not None
    assert adopted is not None
    assert int(adopted[1]) == int(planned[1]) > 0

    # What a subscriber arriving now is handed: nothing of the demo's is retained.
    async with subscribed(broker.port, "#") as afterwards:
        await asyncio.sleep(0.5)
    left = [topic for topic, _, _ in afterwards.messages if topic.startswith(DEMO_PREFIX + "/")]
    assert left == []
    assert not await asyncio.to_thread(session_kept, broker.port, DEMO_PREFIX)


async def test_a_broker_url_that_is_not_one_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_demo(objects=8, follow=False, mqtt_url="http://localhost:1883") == 64
    assert "--mqtt http://localhost:1883: " in capsys.readouterr().err


async def test_the_demo_serves_its_metrics_on_the_port_asked_for_while_it_replicates(
    broker: MosquittoBroker,
) -> None:
    port = free_port()
    scrapes: list[str] = []

    async def scrape_until_done(done: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            while not done.is_set():
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                        scrapes.append(await response.text())
                await asyncio.sleep(0.02)

    done = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(scrape_until_done(done))
        assert await run_demo(objects=8, follow=False, mqtt_url=broker.url, metrics_port=port) == 0
        done.set()
    assert any('crisync_api_available{api="mqtt"} 1.0' in text for text in scrapes)
    assert any("crisync_outcomes_total{" in text for text in scrapes)
