"""Broker outage: mosquitto stopped mid-run while replication goes on; no outcome lost.

One run, watched by the two subscribers that matter to users, on a broker with persistence
(as Debian's mosquitto package ships it):

- one with a persistent session (clean_session false, QoS 1), cut off by the stop and back
  only once the daemon has caught up: every object's final outcome reaches it, through the
  broker's queue;
- one with a clean session, back before the daemon (which reaches the broker through a
  relay that opens once it listens): every outcome the daemon's outbox held when the broker
  returned reaches it. That is the daemon's own guarantee, whatever the broker keeps.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.publisher import mqtt as publisher
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import serve
from crisync.state import outbox
from crisync.state.store import Store, utc_now
from tests.reliability.conftest import Scale
from tests.support.config_file import write_simulator_config
from tests.support.convergence import primary_ids
from tests.support.daemon import daemon_log, start_daemon
from tests.support.mqtt import Received, retained_on, subscribed
from tests.support.proxy import Relay, relay_to
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY
from tests.support.wait import until

PREFIX = "outage"
OUTCOMES = f"{PREFIX}/outcomes/#"
SESSION = "outage-subscriber"  # the persistent subscriber's client id
TOUCHED = 5  # publications changed in Elements while the broker is down
STOP_AFTER = 0.05  # the share of objects with an outcome when the broker stops
ADD_EVERY = 0.25  # seconds between new publications in Elements while the broker is down
PURE_LATENCY_MS = 5  # so that the first objects' outcomes come while most are still to do
# Once the broker is reachable the daemon tries again within its reconnect delay, connects
# within the connect timeout, then drains: by then the outbox must have let go of the outage.
DRAIN_ALLOWANCE = 10.0
RECOVERY_BOUND = publisher.RECONNECT_CAP + publisher.CONNECT_TIMEOUT + DRAIN_ALLOWANCE
PURE_TYPES = {"user": "persons", "publication": "research-outputs"}


def pure_creates(pure: PureSimulator) -> int:
    return sum(n for (_, operation), n in pure.request_counts.items() if operation == "create")


async def outcome_ids_waiting(store: Store) -> frozenset[str]:
    """The ids of the outcomes in the daemon's outbox."""
    async with store.reading() as conn:
        waiting = await outbox.oldest(conn, await outbox.depth(conn))
    return frozenset(json.loads(m.payload)["id"] for m in waiting if "/outcomes/" in m.topic)


def reconnect_attempts(config_path: Path) -> int:
    """The daemon's failed connections to the broker, as its log tells them."""
    lines = daemon_log(config_path).read_text().splitlines()
    return sum(json.loads(line)["event"] == "mqtt.disconnected" for line in lines)


def first_arrivals(received: Received) -> dict[str, float]:
    """Outcome id → when it first arrived."""
    arrivals: dict[str, float] = {}
    for (topic, payload, _), when in zip(received.messages, received.arrival, strict=True):
        if "/outcomes/" in topic:
            arrivals.setdefault(json.loads(payload)["id"], when)
    return arrivals


def missing_final_outcomes(
    elements: ElementsSimulator, outcomes: list[dict[str, Any]], touched: frozenset[int]
) -> list[str]:
    """Objects whose final outcome has not arrived: `updated` for one changed in the outage."""
    arrived = {f"{o['kind']}:{o['key']}" for o in outcomes if o["action"] != "failed"}
    updated = {f"{o['kind']}:{o['key']}" for o in outcomes if o["action"] == "updated"}
    return [
        f"{kind}:{i}"
        for kind in ("user", "publication")
        for i in elements.object_ids(kind)
        if f"{kind}:{i}" not in (updated if kind == "publication" and i in touched else arrived)
    ]


def repeated_ids(outcomes: list[dict[str, Any]]) -> Counter[str]:
    """Outcome id → how many times it arrived again (QoS 1 may deliver more than once)."""
    return Counter({i: n - 1 for i, n in Counter(o["id"] for o in outcomes).items() if n > 1})


def double_outcomes(outcomes: list[dict[str, Any]]) -> int:
    """Outcomes with a new id for a change that had one already: no id lets a subscriber
    drop those."""
    ids_per_change: dict[tuple[str, str, str, str], set[str]] = {}
    for o in outcomes:
        change = (o["source"], o["kind"], o["key"], o["source_changed_at"])
        ids_per_change.setdefault(change, set()).add(o["id"])
    return sum(len(ids) - 1 for ids in ids_per_change.values())


@dataclass
class Outage:
    started: float  # time.monotonic() once the broker was down
    down_since: str  # the same instant, as the daemon stamps outcomes
    waiting_at_stop: frozenset[str]  # ids of the outcomes in the outbox then
    creates: list[int]  # Pure creates at the stop, half-way and at the end
    held: frozenset[str] = frozenset()  # ids of the outcomes in the outbox at the end
    added: int = 0  # publications added in Elements meanwhile
    touched: frozenset[int] = frozenset()  # replicated publications retitled meanwhile
    ended: float = 0.0  # time.monotonic() once the daemon could reach the broker again

    @property
    def produced(self) -> int:
        """Outcomes the daemon produced while the broker was down."""
        return len(self.held - self.waiting_at_stop)


async def add_publications(elements: ElementsSimulator, seconds: float) -> int:
    """A new publication in Elements every ADD_EVERY seconds, for `seconds`; how many."""
    end = time.monotonic() + seconds
    added = 0
    while time.monotonic() < end:
        elements.advance(ADD_EVERY)
        elements.add("publication")
        added += 1
        await asyncio.sleep(ADD_EVERY)
    return added


async def broker_outage(
    broker: MosquittoBroker,
    store: Store,
    elements: ElementsSimulator,
    pure: PureSimulator,
    seconds: float,
) -> Outage:
    """Stop the broker for `seconds` while Elements changes: new publications all along, and
    replicated ones retitled half-way."""
    broker.stop()
    outage = Outage(
        started=time.monotonic(),
        down_since=utc_now(),
        waiting_at_stop=await outcome_ids_waiting(store),
        creates=[pure_creates(pure)],
    )
    outage.added = await add_publications(elements, seconds / 2)
    outage.creates.append(pure_creates(pure))
    in_pure = primary_ids(pure, PURE_TYPES["publication"])
    replicated = [
        i for i in elements.object_ids("publication") if f"elements:publication:{i}" in in_pure
    ]
    outage.touched = frozenset(replicated[:TOUCHED])
    for key in outage.touched:
        elements.touch("publication", key, title=f"Retitled during the outage {key}")
    outage.added += await add_publications(elements, outage.started + seconds - time.monotonic())
    outage.creates.append(pure_creates(pure))
    outage.held = await outcome_ids_waiting(store)
    return outage


async def clean_subscriber_back_first(
    broker: MosquittoBroker, relay: Relay, outage: Outage
) -> Received:
    """Subscribe, then let the daemon reach the broker; until every held outcome arrived."""
    async with subscribed(broker.port, f"{PREFIX}/#") as clean:
        # Until crisync is back, its Last Will speaks for it (mosquitto sends it as it stops).
        await clean.wait_for(lambda r: (f"{PREFIX}/status", b"offline", True) in r.messages)
        await relay.listen()
        outage.ended = time.monotonic()
        await until(
            lambda: outage.held <= first_arrivals(clean).keys(), within=RECOVERY_BOUND, step=0.2
        )
        # Not the retained `online` from before the outage: the daemon's, now.
        await clean.wait_for(lambda r: (f"{PREFIX}/status", b"online", False) in r.messages)
    return clean


async def persistent_subscriber_back_last(
    broker: MosquittoBroker,
    elements: ElementsSimulator,
    before: Received,
    touched: frozenset[int],
    within: float,
) -> Received:
    """Reconnect the persistent session; until every object's final outcome arrived."""
    async with subscribed(broker.port, OUTCOMES, session=SESSION) as again:
        await until(
            lambda: (
                not missing_final_outcomes(elements, before.outcomes() + again.outcomes(), touched)
            ),
            within=within,
            step=0.5,
        )
    return again


@dataclass
class Figures:
    lost: int  # final outcomes the persistent subscriber lacks, held ones the clean one lacks
    repeats: dict[str, int]  # per subscriber, outcomes that arrived again
    repeated_after_the_stop: list[str]  # ids of those produced after the broker went down
    double_outcomes: int
    pure_missing: list[str]
    pure_duplicates: int
    stale_titles: list[int]  # publications changed in the outage whose Pure title is older
    recovery: float  # broker reachable → every outcome held in the outage arrived


def figures_of(
    elements: ElementsSimulator,
    pure: PureSimulator,
    outage: Outage,
    clean: Received,
    persistent: list[dict[str, Any]],
) -> Figures:
    arrivals = first_arrivals(clean)
    repeats = {"persistent": repeated_ids(persistent), "clean": repeated_ids(clean.outcomes())}
    completed_at = {o["id"]: o["completed_at"] for o in persistent + clean.outcomes()}
    pure_ids = {kind: primary_ids(pure, pure_type) for kind, pure_type in PURE_TYPES.items()}
    titles = {o["title"]["value"] for o in pure.objects("research-outputs").values()}
    return Figures(
        lost=len(missing_final_outcomes(elements, persistent, outage.touched))
        + len(outage.held - arrivals.keys()),
        repeats={subscriber: ids.total() for subscriber, ids in repeats.items()},
        repeated_after_the_stop=[
            i for ids in repeats.values() for i in ids if completed_at[i] > outage.down_since
        ],
        double_outcomes=double_outcomes(persistent),
        pure_missing=[
            f"{kind}:{i}"
            for kind, ids in pure_ids.items()
            for i in elements.object_ids(kind)
            if f"elements:{kind}:{i}" not in ids
        ],
        pure_duplicates=sum(n - 1 for ids in pure_ids.values() for n in ids.values() if n > 1),
        stale_titles=[i for i in outage.touched if elements.title_of(i) not in titles],
        recovery=max((arrivals[i] for i in outage.held if i in arrivals), default=outage.ended)
        - outage.ended,
    )


async def retained_feeds(broker: MosquittoBroker, store: Store) -> tuple[bytes, dict[str, Any]]:
    """What a new subscriber is handed: the status, and each feed's status the daemon keeps."""
    async with store.reading() as conn:
        kept = await outbox.retained_messages(conn)
    feed_topics = {topic for topic, _ in kept if topic.startswith(f"{PREFIX}/feeds/")}
    retained = dict(await retained_on(broker.port, f"{PREFIX}/#", 1 + len(feed_topics)))
    assert set(retained) == {f"{PREFIX}/status"} | feed_topics
    feeds = {topic: json.loads(retained[topic]) for topic in feed_topics}
    return retained[f"{PREFIX}/status"], feeds


@asynccontextmanager
async def daemon_running(config_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    daemon = await start_daemon(config_path)
    try:
        yield daemon
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
            await daemon.wait()


async def test_a_broker_stopped_mid_run_loses_no_outcome(
    tmp_path: Path,
    persistent_broker: MosquittoBroker,
    scale: Scale,
    report: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = persistent_broker
    elements = ElementsSimulator(objects=scale.objects, seed=13, password=ELEMENTS_PASSWORD)
    pure = PureSimulator(api_key=PURE_API_KEY, seed=13, latency_ms=PURE_LATENCY_MS)
    config_path = tmp_path / "crisync.toml"
    async with AsyncExitStack() as running:
        elements_origin = await running.enter_async_context(serve(elements.app()))
        pure_origin = await running.enter_async_context(serve(pure.app()))
        relay = await running.enter_async_context(relay_to(broker.port))
        config = write_simulator_config(
            config_path, elements_origin, pure_origin, pure, broker, PREFIX
        )
        # Overridden as an operator would: the daemon reaches the broker through the relay.
        monkeypatch.setenv("CRISYNC_MQTT__URL", f"mqtt://127.0.0.1:{relay.port}")
        persistent_first = await running.enter_async_context(
            subscribed(broker.port, OUTCOMES, session=SESSION)
        )
        daemon = await running.enter_async_context(daemon_running(config_path))
        await persistent_first.wait_for(
            lambda r: len(r.messages) >= scale.objects * STOP_AFTER, within=60
        )
        store = await running.enter_async_context(Store.open(config.state.path))

        relay.stop_listening()  # after the restart it opens once the clean subscriber listens
        # DESIGN: handlers write outcomes to the outbox and only the publisher waits for the
        # broker, so replication goes on meanwhile, new changes included.
        outage = await broker_outage(broker, store, elements, pure, scale.broker_outage_s)
        assert daemon.returncode is None, "the daemon exited while the broker was down"
        broker.start()
        try:
            clean = await clean_subscriber_back_first(broker, relay, outage)
            persistent_again = await persistent_subscriber_back_last(
                broker, elements, persistent_first, outage.touched, within=60 + scale.objects / 10
            )
        except TimeoutError:
            report(
                f"not converged {time.monotonic() - outage.started:.0f}s after the stop: "
                f"{len(await outcome_ids_waiting(store))} outcomes in the outbox, "
                f"log tail: {daemon_log(config_path).read_text()[-1500:]}"
            )
            raise
        converged_after = time.monotonic() - outage.ended
        status, feeds = await retained_feeds(broker, store)
        daemon.send_signal(signal.SIGTERM)
        assert await daemon.wait() == 0

    persistent = persistent_first.outcomes() + persistent_again.outcomes()
    attempts = reconnect_attempts(config_path)
    figures = figures_of(elements, pure, outage, clean, persistent)
    report(
        f"objects={scale.objects} outage={outage.ended - outage.started:.1f}s "
        f"elements_changes_during_outage={outage.added} added+{len(outage.touched)} retitled "
        f"produced_during_outage={outage.produced} held_at_restart={len(outage.held)} "
        f"lost={figures.lost} repeats={figures.repeats['persistent']} (persistent subscriber), "
        f"{figures.repeats['clean']} (clean) double_outcomes={figures.double_outcomes} "
        f"pure_creates_during_outage={outage.creates[1] - outage.creates[0]}"
        f"+{outage.creates[2] - outage.creates[1]} pure_duplicates={figures.pure_duplicates} "
        f"converged=yes ({converged_after:.1f}s after the broker was back) "
        f"longest_recovery={figures.recovery:.1f}s (broker back to outbox drained of the outage) "
        f"reconnect_attempts={attempts}"
    )
    assert outage.produced > 0, "the outage hit no replication"
    # Replication went on through the whole outage, not only its first moments.
    assert outage.creates[0] < outage.creates[1] < outage.creates[2], outage.creates
    assert figures.lost == 0
    # Backoff: a handful of tries while the broker is down, not one per new outcome.
    assert attempts < 10 + scale.broker_outage_s
    # DESIGN: MQTT duplicates only around a crash; here, of what was sent as the broker died.
    assert figures.repeated_after_the_stop == []
    assert figures.double_outcomes == 0
    assert figures.pure_missing == []
    assert figures.pure_duplicates == 0
    assert figures.stale_titles == []
    assert status == b"online"
    # Each feed's retained status is one written after the outage, and healthy.
    assert all(f["last_poll"] > outage.down_since for f in feeds.values()), feeds
    assert all(f["last_error"] is None for f in feeds.values()), feeds
