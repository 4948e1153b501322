"""kill -9 at random points during a replication: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.config import WritebackConfig
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import serve
from tests.reliability.conftest import Scale
from tests.support.config_file import write_simulator_config
from tests.support.convergence import converged, not_written_back, tally
from tests.support.daemon import daemon_log, start_daemon
from tests.support.mqtt import subscribed
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY
from tests.support.wait import until

PREFIX = "crash"


async def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, own_broker: MosquittoBroker, scale: Scale, report: Callable[[str], None]
) -> None:
    elements = ElementsSimulator(objects=scale.objects, seed=11, password=ELEMENTS_PASSWORD)
    # A little latency spreads the kills over every stage of an object's replication.
    pure = PureSimulator(api_key=PURE_API_KEY, seed=11, latency_ms=3)
    rng = random.Random(11)
    last_touch: dict[int, float] = {}
    recoveries: list[float] = []
    config_path = tmp_path / "crisync.toml"
    async with serve(elements.app()) as elements_origin, serve(pure.app()) as pure_origin:
        write_simulator_config(
            config_path,
            elements_origin,
            pure_origin,
            pure,
            own_broker,
            PREFIX,
            writeback={"publications": WritebackConfig(source="manual", field="notes")},
            concurrency=8,
        )
        async with subscribed(own_broker.port, f"{PREFIX}/outcomes/#") as received:
            for _ in range(scale.kills):
                outcomes_before = len(received.messages)
                started = time.monotonic()
                daemon = await start_daemon(config_path)
                await asyncio.sleep(rng.uniform(0.3, 2.5))
                if len(received.messages) > outcomes_before:
                    recoveries.append(received.arrival[outcomes_before] - started)
                daemon.kill()
                await daemon.wait()
                # Changes while the daemon is down must still arrive, with their latest content.
                for publication in rng.sample(elements.object_ids("publication"), 3):
                    elements.advance(1)
                    elements.touch("publication", publication)
                    last_touch[publication] = time.monotonic()

            started = time.monotonic()
            daemon = await start_daemon(config_path)
            try:
                # Looked at every second, not at every outcome: the check reads all of Pure.
                await until(
                    lambda: converged(elements, pure, received, last_touch),
                    within=60 + scale.objects / 10,
                    step=1,
                )
                converged_after = time.monotonic() - started
                await until(lambda: not_written_back(elements, pure) == 0, within=30, step=1)
            except TimeoutError:
                report(
                    f"not converged after {time.monotonic() - started:.0f}s: "
                    f"{len(pure.objects('research-outputs'))} research outputs, "
                    f"{len(pure.objects('persons'))} persons, {len(received.messages)} outcomes; "
                    f"log tail: {daemon_log(config_path).read_text()[-1500:]}"
                )
                raise
            finally:
                daemon.send_signal(signal.SIGTERM)
                await daemon.wait()

    left = tally(elements, pure)
    report(
        f"objects={scale.objects} kills={scale.kills} lost={left.lost} "
        f"duplicates={left.duplicated} unlocked={left.unlocked} converged=yes written_back=all "
        f"final_run_converged_in={converged_after:.1f}s "
        f"longest_recovery={max(recoveries, default=0):.1f}s (start to first outcome)"
    )
    assert left.duplicates == {"persons": 0, "research-outputs": 0}
    assert left.missing == {"persons": 0, "research-outputs": 0}
    assert left.unlocked == 0
