"""A real MQTT subscriber that records what arrives and checks every message against its schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from jsonschema import Draft202012Validator
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion

from crisync.schemas import SchemaName, load_schema

# The second topic level (after the prefix) → the schema of its payloads.
SCHEMA_OF_TOPIC: dict[str, SchemaName] = {
    "outcomes": "outcome",
    "feeds": "feed",
    "jobs": "job",
    "apis": "api",
    "cmd/result": "command-result",
}
VALIDATORS = {name: Draft202012Validator(load_schema(name)) for name in SCHEMA_OF_TOPIC.values()}
COMMAND_TOPICS = ("cmd/retry", "cmd/resync")  # what operators send: input, not output
# The topics whose messages are retained: an empty payload there makes the broker forget
# the message it kept, as `crisync demo` does when it ends.
RETAINED_TOPICS = ("status", "feeds", "jobs")


def problems_with(topic: str, payload: bytes) -> list[str]:
    """Why a message does not match what crisync documents for its topic (empty if it does)."""
    _prefix, _, rest = topic.partition("/")
    if not payload and rest.partition("/")[0] in RETAINED_TOPICS:
        return []
    if rest == "status":
        return [] if payload in (b"online", b"offline") else [f"{topic}: status {payload!r}"]
    if rest in COMMAND_TOPICS:
        return []
    schema = SCHEMA_OF_TOPIC.get(rest) or SCHEMA_OF_TOPIC.get(rest.partition("/")[0])
    if schema is None:
        return [f"{topic}: no documented topic"]
    try:
        document = json.loads(payload)
    except ValueError:
        return [f"{topic}: not JSON: {payload[:80]!r}"]
    return [f"{topic}: {error.message}" for error in VALIDATORS[schema].iter_errors(document)]


@dataclass
class Received:
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)  # time.monotonic() of each message
    invalid: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else b""
        self.messages.append((topic, payload, bool(message.retain)))
        self.arrival.append(time.monotonic())
        self.invalid.extend(problems_with(topic, payload))
        self.arrived.set()

    def on_topic(self, prefix: str) -> list[tuple[str, bytes, bool]]:
        return [m for m in self.messages if m[0].startswith(prefix)]

    def documents(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(payload) for _, payload, _ in self.on_topic(prefix)]

    def outcomes(self) -> list[dict[str, Any]]:
        return [json.loads(payload) for topic, payload, _ in self.messages if "/outcomes/" in topic]

    async def wait_for(self, condition: Callable[[Received], bool], within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not condition(self):
                assert not self.invalid, self.invalid
                self.arrived.clear()
                await self.arrived.wait()
        assert not self.invalid, self.invalid


async def retained_on(
    port: int, topic: str, count: int, within: float = 10
) -> set[tuple[str, bytes]]:
    """What a new subscriber is handed as retained, once that is `count` messages."""
    async with asyncio.timeout(within):
        while True:
            async with subscribed(port, topic) as received:
                with contextlib.suppress(TimeoutError):
                    await received.wait_for(lambda r: len(r.messages) >= count, within=0.3)
            kept = {(topic, payload) for topic, payload, retained in received.messages if retained}
            if len(kept) >= count:
                return kept


@contextlib.asynccontextmanager
async def subscribed(
    port: int, topic: str, *, session: str | None = None
) -> AsyncIterator[Received]:
    """Subscribe (QoS 1) before the block runs; record messages until it ends.

    Every message must match its topic's schema: the block fails otherwise. Without
    `session`, a clean session, and a dropped connection fails the block at once. With it,
    a persistent session under that client id: the broker keeps the subscription and
    queues messages while the subscriber is away, so a connection dropped by a broker
    that goes down only ends the recording.
    """
    received = Received()

    class RecordingQueue(asyncio.Queue[aiomqtt.Message]):
        """aiomqtt's queue of incoming messages; each is recorded as it is put in.

        paho acknowledges a QoS 1 message to the broker right after putting it here.
        Recorded only when read from the queue, a message could be acknowledged and yet
        never recorded: when the block ends, or the connection drops, before the reader's
        turn. So nothing is queued: the recording is the consumer.
        """

        def put_nowait(self, item: aiomqtt.Message) -> None:
            received.record(item)

    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=session or f"test-sub-{id(received)}",
        clean_session=session is None,
        queue_type=RecordingQueue,
    )
    async with client:
        await client.subscribe(topic, qos=1)

        async def watch_connection() -> None:
            """Nothing is ever queued; the iteration ends when the connection drops."""
            try:
                async for _ in client.messages:
                    pass
            except aiomqtt.MqttError:
                if session is None:
                    raise

        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(watch_connection(), name="test-subscriber")
            try:
                yield received
            finally:
                watcher.cancel()
    assert not received.invalid, received.invalid


async def send_command(port: int, topic: str, body: dict[str, Any]) -> None:
    """Publish a command as an operator does: JSON, QoS 1, from a client of its own."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"operator-{id(body)}") as operator:
        await operator.publish(topic, json.dumps(body), qos=1)


@contextlib.contextmanager
def broker_down_url() -> Iterator[str]:
    """An MQTT URL where connections are refused, as on a host whose broker is down.

    The port stays bound (not listening) meanwhile: a free loopback port could be handed
    to the client as its own, and a TCP connection to itself would look like a broker.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"mqtt://127.0.0.1:{held.getsockname()[1]}"


def session_kept(port: int, client_id: str, within: float = 10) -> bool:
    """Whether the broker holds a session under `client_id`; it holds none afterwards.

    An MQTT 5 connect without a clean start takes over a session the broker kept, and the
    CONNACK says whether there was one; with no session expiry, the broker forgets it again
    at the disconnect. aiomqtt does not expose that flag, so this is paho, blocking.
    """
    present: list[bool] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.on_connect = lambda _client, _userdata, flags, _reason, _properties: present.append(
        flags.session_present
    )
    client.connect("127.0.0.1", port, clean_start=False)
    deadline = time.monotonic() + within
    try:
        while not present:
            assert time.monotonic() < deadline, f"no CONNACK from the broker on {port}"
            client.loop(timeout=0.1)
    finally:
        client.disconnect()
    return present[0]
