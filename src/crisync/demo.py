"""`crisync demo`: simulated Elements → simulated Pure → MQTT, in one process, with a summary."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
from pydantic import ValidationError

from crisync.cli import EX_USAGE
from crisync.config.model import Config, DaemonConfig, MqttConfig
from crisync.daemon import run_daemon
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.sim import PureSimulator
from crisync.lifecycle import Lifecycle
from crisync.listener.elements.config import ElementsConfig
from crisync.listener.elements.sim import ElementsSimulator
from crisync.publisher.mqtt import CONNECT_TIMEOUT, status_topic, tls_context
from crisync.sim.broker import MosquittoBroker, mosquitto_binary
from crisync.sim.cli import ELEMENTS_PASSWORD, ELEMENTS_USER, PURE_API_KEY
from crisync.sim.server import serve
from crisync.state import outbox
from crisync.state.store import Store
from crisync.status import read_status

CHANGE_EVERY = 3.0
# The demo's topics and client id: the broker may be a production one, whose `crisync/`
# topics and session belong to the real daemon.
DEMO_PREFIX = "crisync-demo"


def say(text: str = "") -> None:
    print(text, flush=True)


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _watch_command(host: str, port: int) -> str:
    return f"mosquitto_sub -h {host} -p {port} -t '{DEMO_PREFIX}/#' -v"


@contextlib.contextmanager
def _demo_broker(workdir: Path, asked: MqttConfig | None) -> Iterator[tuple[str, str | None]]:
    """(mqtt url, how to watch, None without a broker): the one asked for, the local broker,
    a private one, or none."""
    if asked is not None:
        yield asked.url, _watch_command(asked.host, asked.port)
        return
    if _broker_answers("localhost", 1883):
        yield "mqtt://localhost:1883", _watch_command("localhost", 1883)
        return
    if mosquitto_binary() is None:
        say(
            "No MQTT broker on localhost:1883 and no mosquitto installed: outcomes stay in the "
            "outbox (install mosquitto to see them published)."
        )
        yield "mqtt://localhost:1883", None
        return
    broker = MosquittoBroker(workdir)
    broker.start()
    try:
        yield broker.url, _watch_command("127.0.0.1", broker.port)
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def _simulators(
    objects: int,
) -> AsyncIterator[tuple[ElementsSimulator, str, PureSimulator, str]]:
    elements = ElementsSimulator(
        objects=objects, seed=1, username=ELEMENTS_USER, password=ELEMENTS_PASSWORD
    )
    pure = PureSimulator(api_key=PURE_API_KEY, seed=1)
    async with serve(elements.app()) as elements_origin, serve(pure.app()) as pure_origin:
        yield elements, f"{elements_origin}/secure-api/v5.5", pure, f"{pure_origin}/ws/api"


async def run_demo(*, objects: int, follow: bool, mqtt_url: str | None = None) -> int:
    """Without `mqtt_url`, the broker on localhost:1883, else a private one if mosquitto is
    installed. Whichever it is, the demo leaves no retained message and no session on it."""
    try:
        asked = None if mqtt_url is None else MqttConfig(url=mqtt_url)
    except ValidationError as exc:
        print(f"crisync demo: --mqtt {mqtt_url}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EX_USAGE
    with (
        tempfile.TemporaryDirectory(prefix="crisync-demo-") as workdir,
        _demo_broker(Path(workdir), asked) as (broker_url, watch),
    ):
        async with _simulators(objects) as (elements, elements_url, pure, pure_url):
            mqtt = MqttConfig(
                url=broker_url,
                topic_prefix=DEMO_PREFIX,
                client_id=DEMO_PREFIX,
                persistent_session=False,
            )
            config = Config(
                state={"path": Path(workdir) / "state.db"},
                daemon=DaemonConfig(shutdown_timeout=10, log_format="console", log_level="warning"),
                elements=ElementsConfig(
                    url=elements_url,
                    username=ELEMENTS_USER,
                    password=ELEMENTS_PASSWORD,
                    poll_interval=2,
                    request_gap=0.02,
                    lookback=10,
                ),
                pure=PureConfig(
                    url=pure_url,
                    api_key=PURE_API_KEY,
                    managing_organization=pure.organization_uuids[0],
                ),
                mqtt=mqtt,
            )
            say("crisync demo")
            say(
                f"  Elements simulator  {elements_url}  "
                f"({len(elements.object_ids('user'))} users, "
                f"{len(elements.object_ids('publication'))} publications)"
            )
            say(f"  Pure simulator      {pure_url}")
            say(f"  MQTT broker         {broker_url}")
            say(f"  watch outcomes:     {watch or '(no broker)'}")
            say()
            if follow:
                await _follow(config, elements)
            else:
                await _two_passes(config, elements, pure)
            if watch is not None:
                await _clear_retained(mqtt, config.state.path)
    return 0


async def _clear_retained(mqtt: MqttConfig, state: Path) -> None:
    """An empty retained message on every topic the demo retained: the broker forgets them.

    The daemon has stopped and drained the outbox, so nothing of the demo's follows these.
    """
    async with Store.open(state) as store, store.reading() as conn:
        remembered = await outbox.retained_messages(conn)
    topics = [status_topic(mqtt.topic_prefix), *(topic for topic, _ in remembered)]
    try:
        async with aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=mqtt.client_id,
            clean_session=True,
            timeout=CONNECT_TIMEOUT,
            tls_context=await asyncio.to_thread(tls_context, mqtt) if mqtt.tls else None,
        ) as client:
            for topic in topics:
                await client.publish(topic, b"", qos=1, retain=True)
    except aiomqtt.MqttError as exc:
        say(f"The demo's retained messages under {mqtt.topic_prefix}/ stay: {exc}")


async def _two_passes(config: Config, elements: ElementsSimulator, pure: PureSimulator) -> None:
    await run_daemon(config, once=True)
    await _report("First pass (backfill)", config, pure)
    changed = elements.object_ids("publication")[:3]
    elements.advance(5)
    for publication in changed:
        elements.touch("publication", publication)
    pure.request_counts.clear()
    await run_daemon(config, once=True)
    await _report(f"Second pass ({len(changed)} publications changed in Elements)", config, pure)


async def _report(title: str, config: Config, pure: PureSimulator) -> None:
    async with Store.open(config.state.path) as store:
        status = await read_status(store)
    requests = dict(sorted(pure.request_counts.items()))
    created = {t: len(pure.objects(t)) for t in ("persons", "research-outputs")}
    locked = sum(pure.is_locked(t, u) for t in created for u in pure.objects(t))
    say(title)
    say(
        f"  Pure now holds {created['persons']} persons and {created['research-outputs']} "
        f"research outputs; {locked} locked"
    )
    say(
        "  Pure requests this pass: "
        + (", ".join(f"{t} {op}: {n}" for (t, op), n in requests.items()) or "none")
    )
    say(
        f"  outcomes still in the outbox: {status.outbox_depth}; "
        f"dead letters: {len(status.dead_letters)}"
    )
    say()


async def _follow(config: Config, elements: ElementsSimulator) -> None:
    say("Following: a publication changes every few seconds; Ctrl-C stops.")
    life = Lifecycle()
    rng = random.Random(1)  # noqa: S311 - picks demo objects
    async with asyncio.TaskGroup() as group:
        group.create_task(run_daemon(config, lifecycle=life), name="daemon")
        group.create_task(_change_now_and_then(elements, rng, life.stopping), name="changes")


async def _change_now_and_then(
    elements: ElementsSimulator, rng: random.Random, stopping: asyncio.Event
) -> None:
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=CHANGE_EVERY)
            return
        publication = rng.choice(elements.object_ids("publication"))
        elements.advance(CHANGE_EVERY)
        elements.touch("publication", publication)
        say(f"  changed publication {publication} in Elements: {elements.title_of(publication)!r}")
