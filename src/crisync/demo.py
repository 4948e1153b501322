"""`crisync demo`: simulated Elements → simulated Pure → MQTT, in one process, with a summary."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
from pydantic import ValidationError

from crisync.cli import EX_USAGE
from crisync.config.model import Config, DaemonConfig, MetricsConfig, MqttConfig
from crisync.daemon import run_daemon
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.sim import PureSimulator
from crisync.lifecycle import Lifecycle
from crisync.listener.elements.config import ElementsConfig
from crisync.listener.elements.sim import ElementsSimulator
from crisync.logs import configure_logging
from crisync.plan import make_plan
from crisync.progress import with_progress, work_line
from crisync.publisher.mqtt import CONNECT_TIMEOUT, status_topic, tls_context
from crisync.sim.broker import trial_broker
from crisync.sim.cli import ELEMENTS_PASSWORD, ELEMENTS_USER, PURE_API_KEY
from crisync.sim.server import serve
from crisync.sim.site import populate_site
from crisync.state import outbox
from crisync.state.store import Store
from crisync.status import read_status
from crisync.telemetry import Telemetry

CHANGE_EVERY = 3.0
PURE_WRITES = frozenset({"create", "update", "lock", "unlock", "delete"})
# The demo's topics and client id: the broker may be a production one, whose `crisync/`
# topics and session belong to the real daemon.
DEMO_PREFIX = "crisync-demo"


def say(text: str = "") -> None:
    print(text, flush=True)


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


async def run_demo(
    *, objects: int, follow: bool, mqtt_url: str | None = None, metrics_port: int | None = None
) -> int:
    """Without `mqtt_url`, the broker on localhost:1883, else a private one if mosquitto is
    installed. Whichever it is, the demo leaves no retained message and no session on it.
    With `metrics_port`, /metrics and /healthz listen on 127.0.0.1 there while the daemon
    runs (during each pass, or the whole time with `follow`)."""
    try:
        asked = None if mqtt_url is None else MqttConfig(url=mqtt_url)
    except ValidationError as exc:
        print(f"crisync demo: --mqtt {mqtt_url}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EX_USAGE
    try:
        metrics = None if metrics_port is None else MetricsConfig(port=metrics_port)
    except ValidationError as exc:
        print(f"crisync demo: --metrics {metrics_port}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EX_USAGE
    with (
        tempfile.TemporaryDirectory(prefix="crisync-demo-") as workdir,
        trial_broker(Path(workdir), asked) as broker,
    ):
        watch = broker.watch_command(DEMO_PREFIX)
        if not broker.answers:
            say(
                "No MQTT broker on localhost:1883 and no mosquitto installed: outcomes stay in "
                "the outbox (install mosquitto to see them published)."
            )
        async with _simulators(objects) as (elements, elements_url, pure, pure_url):
            mqtt = MqttConfig(
                url=broker.url,
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
                    # A site's quota, as the example suggests: /metrics shows it spent.
                    hourly_quota=20000,
                ),
                mqtt=mqtt,
                metrics=metrics,
            )
            say("crisync demo")
            say(
                f"  Elements simulator  {elements_url}  "
                f"({len(elements.object_ids('user'))} users, "
                f"{len(elements.object_ids('publication'))} publications)"
            )
            say(f"  Pure simulator      {pure_url}")
            say(f"  MQTT broker         {broker.url}")
            say(f"  watch outcomes:     {watch or '(no broker)'}")
            if metrics is not None:
                say(f"  metrics             http://{metrics.host}:{metrics.port}/metrics")
            say()
            # A real Pure is never empty: HR's persons, imported research outputs, a duplicate.
            say("The Pure simulator starts as a site's Pure is:")
            for line in populate_site(pure, elements, seed=1).lines():
                say(line)
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
    await _show_plan(config, pure)
    pure.request_counts.clear()
    telemetry = await _pass(config)
    await _report("First pass (first contact and backfill)", config, pure, telemetry)
    changed = elements.object_ids("publication")[:3]
    elements.advance(5)
    for publication in changed:
        elements.touch("publication", publication)
    pure.request_counts.clear()
    telemetry = await _pass(config)
    await _report(
        f"Second pass ({len(changed)} publications changed in Elements)", config, pure, telemetry
    )


async def _pass(config: Config) -> Telemetry:
    """`crisync once`, with its progress on a terminal; what it counted."""
    telemetry = Telemetry()
    await with_progress(run_daemon(config, once=True, telemetry=telemetry), work_line(telemetry))
    return telemetry


async def _show_plan(config: Config, pure: PureSimulator) -> None:
    """What `crisync plan` says before the first pass: the demo's Pure is a populated one."""
    configure_logging("console", "critical")  # what would fail is the plan's to say
    try:
        telemetry = Telemetry()
        plan = await with_progress(make_plan(config, telemetry=telemetry), work_line(telemetry))
    finally:
        configure_logging("console", "warning")
    say("Plan (`crisync plan`: what the first pass will do; nothing written yet)")
    say("  " + ", ".join(f"{count} {action}" for action, count in plan.summary.items()))
    shown: set[str] = set()
    for planned in plan.objects:
        if planned.action in shown or planned.action == "create":
            continue
        shown.add(planned.action)
        where = f" {planned.target_type} {planned.target_uuid}" if planned.target_uuid else ""
        say(f"  e.g. {planned.action} {planned.object_key}{where}")
        if planned.note:
            say(f"       {planned.note}")
    say(f"  Pure writes made by the plan: {_writes(pure)}")
    say()


def _writes(pure: PureSimulator) -> int:
    return sum(n for (_, op), n in pure.request_counts.items() if op in PURE_WRITES)


async def _report(title: str, config: Config, pure: PureSimulator, telemetry: Telemetry) -> None:
    async with Store.open(config.state.path) as store:
        status = await read_status(store)
    requests = dict(sorted(pure.request_counts.items()))
    created = {t: len(pure.objects(t)) for t in ("persons", "research-outputs")}
    locked = sum(pure.is_locked(t, u) for t in created for u in pure.objects(t))
    say(title)
    say(
        "  outcomes: "
        + ", ".join(f"{count} {action}" for action, count in sorted(telemetry.outcomes.items()))
    )
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
        + (
            " (ambiguous matches wait for a person: `crisync status`)"
            if status.dead_letters
            else ""
        )
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
