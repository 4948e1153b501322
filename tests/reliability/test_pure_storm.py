"""Pure storm: 30% of Pure requests fail or hang; everything converges, nothing is duplicated."""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import serve
from crisync.state import dead_letters
from crisync.state.store import Store
from tests.reliability.conftest import Scale
from tests.support.config_file import write_simulator_config
from tests.support.convergence import converged, tally
from tests.support.daemon import daemon_log, start_daemon
from tests.support.mqtt import subscribed
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY
from tests.support.wait import until

PREFIX = "storm"
STORM_RATE = 0.3
STORM_STATUSES = (409, 500, 503, 504)
# A short client timeout keeps hangs cheap, yet is long enough for a 1,000-object search
# page on a loaded machine; a hang outlasts it by half a second.
PURE_TIMEOUT = 1.0
HANG = 1.5
# Hangs and retries are mostly waiting: more objects in flight keep the run short.
CONCURRENCY = 32
# Publications changed in Elements while the storm blows, so updates meet it too.
CHANGED_SHARE = 0.03


def log_entries(log: Path) -> list[dict[str, Any]]:
    """The daemon's JSON log lines; their event names are documented as stable."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def recoveries(entries: list[dict[str, Any]]) -> list[float]:
    """Seconds from each object's first failed attempt to its replication."""
    failed_at: dict[tuple[str, str], datetime] = {}
    recovered = []
    for entry in entries:
        key = (entry.get("kind"), entry.get("key"))
        when = datetime.fromisoformat(entry["timestamp"])
        if entry["event"] == "handler.retry_later":
            failed_at.setdefault(key, when)
        elif entry["event"] == "object.replicated" and key in failed_at:
            recovered.append((when - failed_at.pop(key)).total_seconds())
    return recovered


async def test_a_pure_storm_converges_with_no_duplicates_and_no_dead_letters(
    tmp_path: Path, own_broker: MosquittoBroker, scale: Scale, report: Callable[[str], None]
) -> None:
    elements = ElementsSimulator(objects=scale.objects, seed=17, password=ELEMENTS_PASSWORD)
    pure = PureSimulator(api_key=PURE_API_KEY, seed=17)
    pure.storm(STORM_RATE, statuses=STORM_STATUSES, hang_s=HANG, seed=17)
    rng = random.Random(17)
    last_touch: dict[int, float] = {}
    config_path = tmp_path / "crisync.toml"
    async with serve(elements.app()) as elements_origin, serve(pure.app()) as pure_origin:
        write_simulator_config(
            config_path,
            elements_origin,
            pure_origin,
            pure,
            own_broker,
            PREFIX,
            concurrency=CONCURRENCY,
            timeout=PURE_TIMEOUT,
        )
        async with subscribed(own_broker.port, f"{PREFIX}/outcomes/#") as received:
            started = time.monotonic()
            daemon = await start_daemon(config_path)
            try:
                await received.wait_for(
                    lambda r: len(r.messages) >= scale.objects // 3, within=scale.objects / 5
                )
                publications = elements.object_ids("publication")
                for publication in rng.sample(
                    publications, max(5, int(len(publications) * CHANGED_SHARE))
                ):
                    elements.advance(1)
                    elements.touch("publication", publication)
                    last_touch[publication] = time.monotonic()
                # Looked at every second, not at every outcome: the check reads all of Pure.
                await until(
                    lambda: converged(elements, pure, received, last_touch),
                    within=60 + scale.objects / 20,
                    step=1,
                )
                converged_after = time.monotonic() - started
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

    left = tally(elements, pure, also_unique=("external-persons",))
    async with Store.open(tmp_path / "state.db") as store, store.reading() as conn:
        letters = await dead_letters.all_dead_letters(conn)
    outcomes = received.outcomes()
    failed = [o for o in outcomes if o["action"] == "failed"]
    entries = log_entries(daemon_log(config_path))
    recovered = recoveries(entries)
    requests = sum(pure.request_counts.values())
    injected = sum(pure.storm_failures.values())
    report(
        f"objects={scale.objects} changed_mid_storm={len(last_touch)} lost={left.lost} "
        f"duplicates={left.duplicated} unlocked={left.unlocked} converged=yes "
        f"converged_in={converged_after:.1f}s dead_letters={len(letters)} "
        f"failed_outcomes={len(failed)} pure_requests={requests} "
        f"injected={injected} ({injected / requests:.0%}) "
        f"by_kind={dict(sorted(pure.storm_failures.items()))} "
        f"replayed_at_once={sum(entry['event'] == 'pure.retry' for entry in entries)} "
        f"objects_retried={len(recovered)} "
        f"most_attempts={max(o['attempts'] for o in outcomes)} "
        f"longest_recovery={max(recovered, default=0):.1f}s (first failed attempt to replicated)"
    )
    assert left.missing == {"persons": 0, "research-outputs": 0}
    assert set(left.duplicates.values()) == {0}, left.duplicates
    assert left.unlocked == 0
    assert letters == [], letters
    assert failed == []
    # The storm blew as asked: about its rate, every kind of failure, some after the write.
    assert 0.25 <= injected / requests <= 0.35
    kinds = {kind.removesuffix(" after write") for kind in pure.storm_failures}
    assert kinds == {"409", "500", "503", "504", "hang"}
    assert any(kind.endswith(" after write") for kind in pure.storm_failures)
