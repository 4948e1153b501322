"""Pure outage: Pure stops mid-run and comes back; the outage is Pure's state, not a failure
of each object. Nothing becomes a dead letter, health, status and MQTT say Pure is out
while it is, and everything converges once it is back."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port, serve
from crisync.state import dead_letters
from crisync.state.store import Store
from tests.reliability.conftest import Scale
from tests.support.config_file import write_simulator_config
from tests.support.convergence import converged, tally
from tests.support.daemon import daemon_log, daemon_output, start_daemon
from tests.support.mqtt import Received, subscribed
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY
from tests.support.wait import until

PREFIX = "pure-outage"
OUTAGE_S = 4.0
STOP_AFTER = 0.1  # the share of objects with an outcome when Pure stops
PURE_LATENCY_MS = 5  # so that most objects are still to do when it stops
# Back within the longest probe delay the outage reaches (2, 4, 8 s ceilings), plus the work
# left (a twentieth of a second per object at most).
RECOVERY_BOUND = 30.0


def api_states(received: Received) -> list[dict[str, Any]]:
    return [
        json.loads(payload) for topic, payload, _ in received.messages if topic.endswith("/pure")
    ]


async def http_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def status_of(config_path: Path) -> str:
    """`crisync status` as an operator runs it beside the daemon."""
    output = daemon_output(config_path)
    before = output.read_text() if output.exists() else ""
    command = await start_daemon(config_path, "status")
    assert await command.wait() == 0
    return output.read_text()[len(before) :]


def configure(
    config_path: Path,
    elements_origin: str,
    pure: PureSimulator,
    pure_port: int,
    broker: MosquittoBroker,
    metrics_port: int,
) -> None:
    """The daemon's file: Pure on a port of its own, so that it can stop and come back."""
    pure_origin = f"http://127.0.0.1:{pure_port}"
    write_simulator_config(config_path, elements_origin, pure_origin, pure, broker, PREFIX)
    with config_path.open("a") as config_file:
        config_file.write(f"\n[metrics]\nport = {metrics_port}\n")


async def test_a_pure_outage_holds_the_work_and_loses_nothing(
    tmp_path: Path,
    own_broker: MosquittoBroker,
    scale: Scale,
    report: Any,
) -> None:
    elements = ElementsSimulator(objects=scale.objects, seed=23, password=ELEMENTS_PASSWORD)
    pure = PureSimulator(api_key=PURE_API_KEY, seed=23, latency_ms=PURE_LATENCY_MS)
    pure_port, metrics_port = free_port(), free_port()
    config_path = tmp_path / "crisync.toml"
    async with serve(elements.app()) as elements_origin:
        configure(config_path, elements_origin, pure, pure_port, own_broker, metrics_port)
        async with subscribed(own_broker.port, f"{PREFIX}/#") as received:
            daemon = None
            try:
                async with serve(pure.app(), port=pure_port):
                    daemon = await start_daemon(config_path)
                    await received.wait_for(
                        lambda r: len(r.outcomes()) >= scale.objects * STOP_AFTER, within=60
                    )
                stopped = time.monotonic()
                done_at_stop = len(received.outcomes())
                await received.wait_for(
                    lambda r: any(not state["available"] for state in api_states(r)), within=30
                )
                opened_after = time.monotonic() - stopped
                health, health_body = await http_get(f"http://127.0.0.1:{metrics_port}/healthz")
                status = await status_of(config_path)
                await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
                done_in_outage = len(received.outcomes()) - done_at_stop
                async with serve(pure.app(), port=pure_port):
                    back = time.monotonic()
                    await until(
                        lambda: converged(elements, pure, received, {}),
                        within=RECOVERY_BOUND + scale.objects / 20,
                        step=0.5,
                    )
                    recovered_in = time.monotonic() - back
                    await received.wait_for(lambda r: api_states(r)[-1]["available"], within=10)
            finally:
                if daemon is not None:
                    daemon.send_signal(signal.SIGTERM)
                    await daemon.wait()

    left = tally(elements, pure, also_unique=("external-persons",))
    async with Store.open(tmp_path / "state.db") as store, store.reading() as conn:
        letters = await dead_letters.all_dead_letters(conn)
    outcomes = received.outcomes()
    entries = [json.loads(line) for line in daemon_log(config_path).read_text().splitlines()]
    events = [entry["event"] for entry in entries]
    retried = [o for o in outcomes if o["attempts"] > 1]
    report(
        f"objects={scale.objects} outage={OUTAGE_S}s done_before={done_at_stop} "
        f"done_in_outage={done_in_outage} opened_after={opened_after:.1f}s "
        f"recovered_in={recovered_in:.1f}s dead_letters={len(letters)} lost={left.lost} "
        f"duplicates={left.duplicated} probes_failed={events.count('circuit.probe_failed')} "
        f"pure_retry_lines={events.count('pure.retry')} "
        f"retry_later_lines={events.count('handler.retry_later')} log_lines={len(entries)} "
        f"outcomes_with_a_second_attempt={len(retried)}"
    )
    assert health == 503
    assert "pure" in json.loads(health_body)["unavailable"][0]
    assert status.splitlines()[0].startswith("pure unreachable since ")
    assert letters == []
    assert [o for o in outcomes if o["action"] == "failed"] == []
    assert left.lost == 0
    assert set(left.duplicates.values()) == {0}
    assert events.count("circuit.opened") == 1
    assert events.count("circuit.closed") == 1
    # Only failures in the streak before a last answer of Pure (requests in flight as it
    # stopped) count toward an object's attempts; none goes past a second one.
    assert max(o["attempts"] for o in outcomes) <= 2
    assert api_states(received)[-1]["available"] is True
