"""`crisync demo`: simulated Elements → simulated Pure → MQTT, in one process, with a summary."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from crisync.config.model import Config, DaemonConfig, MqttConfig
from crisync.daemon import run_daemon
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.sim import PureSimulator
from crisync.lifecycle import Lifecycle
from crisync.listener.elements.config import ElementsConfig
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker, mosquitto_binary
from crisync.sim.cli import ELEMENTS_PASSWORD, ELEMENTS_USER, PURE_API_KEY
from crisync.sim.server import serve
from crisync.state.store import Store
from crisync.status import read_status

CHANGE_EVERY = 3.0


def say(text: str = "") -> None:
    print(text, flush=True)


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _demo_broker(workdir: Path) -> Iterator[tuple[str, str]]:
    """(mqtt url, how to watch) — the local broker, a private one, or none."""
    if _broker_answers("localhost", 1883):
        yield "mqtt://localhost:1883", "mosquitto_sub -h localhost -p 1883 -t 'crisync/#' -v"
        return
    if mosquitto_binary() is None:
        say(
            "No MQTT broker on localhost:1883 and no mosquitto installed: outcomes stay in the "
            "outbox (install mosquitto to see them published)."
        )
        yield "mqtt://localhost:1883", "(no broker)"
        return
    broker = MosquittoBroker(workdir)
    broker.start()
    try:
        yield broker.url, f"mosquitto_sub -h 127.0.0.1 -p {broker.port} -t 'crisync/#' -v"
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


async def run_demo(*, objects: int, follow: bool) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="crisync-demo-") as workdir,
        _demo_broker(Path(workdir)) as (mqtt_url, watch),
    ):
        async with _simulators(objects) as (elements, elements_url, pure, pure_url):
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
                mqtt=MqttConfig(url=mqtt_url, topic_prefix="crisync", client_id="crisync-demo"),
            )
            say("crisync demo")
            say(
                f"  Elements simulator  {elements_url}  "
                f"({len(elements.object_ids('user'))} users, "
                f"{len(elements.object_ids('publication'))} publications)"
            )
            say(f"  Pure simulator      {pure_url}")
            say(f"  MQTT broker         {mqtt_url}")
            say(f"  watch outcomes:     {watch}")
            say()
            if follow:
                await _follow(config, elements)
            else:
                await _two_passes(config, elements, pure)
    return 0


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
