"""The publisher: the daemon's one MQTT connection.

It drains the outbox with QoS 1 and deletes a row only once the broker acknowledged it;
says `online` (retained) on every connect, with `offline` as its Last Will and on a clean
stop; publishes the retained feed and job status again after every reconnect (a broker
restarted without persistence has forgotten them); and hands the messages of the topics
it subscribes to (operator commands) to whoever asked for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from crisync.config.model import MqttConfig
from crisync.lifecycle import Lifecycle
from crisync.publisher.connection import ConnectionHistory
from crisync.state import outbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.publisher")

BATCH = 100
IDLE_WAKE = 1.0
CONNECT_TIMEOUT = 10.0
# Reconnect delays (see connection.py): at least RECONNECT_BASE, at most RECONNECT_CAP
# seconds, and a connection that lasted STABLE_CONNECTION ends an outage.
RECONNECT_BASE = 1.0
RECONNECT_CAP = 30.0
STABLE_CONNECTION = 10.0


def status_topic(prefix: str) -> str:
    return f"{prefix}/status"


class Inbound(Protocol):
    """Where the messages of subscribed topics go."""

    @property
    def topics(self) -> Sequence[str]: ...

    def deliver(
        self, topic: str, payload: bytes, *, retained: bool, acknowledge: Callable[[], None]
    ) -> None:
        """Take a message; `acknowledge` once it is safe (its PUBACK goes to the broker)."""


# One message to publish: topic, payload, retain.
Outgoing = tuple[str, str, bool]


def tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The TLS settings for mqtts://, read at every connect so renewed certificates count."""
    context = ssl.create_default_context(cafile=config.ca_file)
    if config.cert_file is not None:
        context.load_cert_chain(config.cert_file, config.key_file)
    return context


async def check_broker(config: MqttConfig) -> str:
    """Connect once and leave, as `check-config --online` does: under a client id of its own,
    since the broker would end a running daemon's connection under the same one."""
    tls = await asyncio.to_thread(tls_context, config) if config.tls else None
    async with aiomqtt.Client(
        config.host,
        config.port,
        identifier=f"{config.client_id}-check",
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        timeout=CONNECT_TIMEOUT,
        tls_context=tls,
        protocol=aiomqtt.ProtocolVersion.V5
        if config.protocol == "5"
        else aiomqtt.ProtocolVersion.V311,
    ):
        return f"connected to {config.host}:{config.port} with MQTT {config.protocol}"


class Publisher:
    loop_name = "publisher"
    # Beats come at least every reconnect delay (30 s at most) plus a connect timeout.
    beat_deadline = 120.0

    def __init__(
        self,
        config: MqttConfig,
        store: Store,
        *,
        life: Lifecycle,
        telemetry: Telemetry,
        inbound: Inbound | None = None,
    ) -> None:
        """Once `life.outbox_closed`, nothing will add to the outbox: drain it and stop."""
        self._telemetry = telemetry
        self._config = config
        self._store = store
        self._outbox_ready = life.outbox_ready
        self._writers_done = life.outbox_closed
        self._inbound = inbound
        self._status = status_topic(config.topic_prefix)

    async def _client(self) -> aiomqtt.Client:
        config = self._config
        options: dict[str, Any] = {}
        # A persistent session outlives a disconnect, so commands sent meanwhile wait for us.
        persistent = config.persistent_session
        if config.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # An expiry of 0 ends the session with the connection.
            properties.SessionExpiryInterval = config.session_expiry if persistent else 0
            options.update(
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=not persistent,
                properties=properties,
            )
        else:
            options.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=not persistent)
        if config.tls:
            try:
                options["tls_context"] = await asyncio.to_thread(tls_context, config)
            except OSError as exc:  # ssl.SSLError is one: a bad or missing certificate file
                raise aiomqtt.MqttError(f"TLS setup failed: {exc}") from exc
        client = aiomqtt.Client(
            config.host,
            config.port,
            identifier=config.client_id,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            timeout=CONNECT_TIMEOUT,
            keepalive=config.keepalive,
            will=aiomqtt.Will(self._status, "offline", qos=1, retain=True),
            max_inflight_messages=BATCH,
            **options,
        )
        # A whole batch in flight is the plan, not a backlog worth warning about.
        client.pending_calls_threshold = BATCH + 2
        # A command is acknowledged once carried out, not on receipt: aiomqtt 2.5 leaves
        # manual acknowledgement to the paho client it wraps.
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        """Publish until the writers are done and the outbox is empty, reconnecting as needed.

        When the writers are done but the broker cannot be reached, the outcomes stay
        in the outbox for the next start.
        """
        history = ConnectionHistory(
            base=RECONNECT_BASE, cap=RECONNECT_CAP, stable_after=STABLE_CONNECTION
        )
        self._telemetry.broker_connected = False
        while True:
            try:
                async with await self._client() as client:
                    history.connected()
                    self._telemetry.broker_connected = True
                    await self._connected(client, history)
                    _raise_first(await self._publish_all(client, [(self._status, "offline", True)]))
                    log.info("mqtt.offline_published")
                    return
            except aiomqtt.MqttError as exc:
                self._telemetry.broker_connected = False
                if self._writers_done.is_set():
                    async with self._store.reading() as conn:
                        left = await outbox.depth(conn)
                    log.warning("mqtt.unreachable_at_shutdown", error=str(exc), outbox_left=left)
                    return
                # Retrying a broker that is down is this loop's work: it is alive.
                self._telemetry.beat(self.loop_name)
                setback = history.failed(exc)
                delay = setback.delay
                if setback.clash is not None:
                    self._clashed(setback.clash, delay)
                elif isinstance(exc, MqttConnectError):
                    # The broker answered but refused us: credentials, client id or ACL.
                    log.error(  # noqa: TRY400 - a refusal is a known state; a traceback adds nothing
                        "mqtt.connect_refused", error=str(exc), retry_in=round(delay, 2)
                    )
                else:
                    log.warning("mqtt.disconnected", error=str(exc), retry_in=round(delay, 2))
                # New outcomes do not bring the broker back: only the end of the writers cuts
                # the delay short, for a last try before the outbox is left for the next start.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._writers_done.wait(), timeout=delay)

    def _clashed(self, evidence: str, delay: float) -> None:
        """Another client uses crisync's client id: said loudly, and in /healthz."""
        client_id = self._config.client_id
        log.error(
            "mqtt.client_id_in_use",
            client_id=client_id,
            evidence=evidence,
            detail=(
                "another MQTT client connects with the same [mqtt] client_id, and the broker "
                "keeps one connection per client id: most likely a second crisync with this "
                "configuration; give each crisync a client_id of its own"
            ),
            retry_in=round(delay, 2),
        )
        since = datetime.now(UTC).strftime("%H:%M")
        self._telemetry.api_state(
            "mqtt", f"since {since}: client id {client_id!r} is in use by another client"
        )

    async def _connected(self, client: aiomqtt.Client, history: ConnectionHistory) -> None:
        """One connection's work: subscribe, announce, restore the retained state, drain."""
        if self._inbound is not None:
            # Before `online`, so that `online` means commands are heard.
            await client.subscribe([(topic, 1) for topic in self._inbound.topics])
        _raise_first(await self._publish_all(client, [(self._status, "online", True)]))
        republished = await self._republish_retained(client)
        log.info(
            "mqtt.connected",
            host=self._config.host,
            port=self._config.port,
            protocol=self._config.protocol,
            retained_republished=republished,
        )
        try:
            async with asyncio.TaskGroup() as group:
                receiver = group.create_task(self._receive(client), name="mqtt-receive")
                settling = group.create_task(self._settle(history), name="mqtt-settle")
                await self._drain_until_done(client)
                receiver.cancel()
                settling.cancel()
        except* aiomqtt.MqttError as failures:
            raise failures.exceptions[0] from None

    async def _settle(self, history: ConnectionHistory) -> None:
        """Once the connection has lasted, a client id clash said before is over."""
        await asyncio.sleep(history.until_stable())
        if self._telemetry.api_outages.get("mqtt"):
            self._telemetry.api_state("mqtt", None)

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Hand on what arrives; raises MqttError when the connection drops.

        That is also how an idle connection notices a lost broker, and reconnects to say
        `online` and restore the retained state without waiting for the next outcome.
        """
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload
            body = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
            acknowledge = _acknowledgement(client, message)
            if self._inbound is not None and topic in self._inbound.topics:
                self._inbound.deliver(topic, body, retained=message.retain, acknowledge=acknowledge)
            else:
                # A persistent session keeps subscriptions of an earlier configuration.
                log.warning("mqtt.unexpected_message", topic=topic)
                acknowledge()

    async def _republish_retained(self, client: aiomqtt.Client) -> int:
        async with self._store.reading() as conn:
            remembered = await outbox.retained_messages(conn)
        ours = [
            (topic, payload, True)
            for topic, payload in remembered
            if topic.startswith(f"{self._config.topic_prefix}/")
        ]
        for start in range(0, len(ours), BATCH):
            _raise_first(await self._publish_all(client, ours[start : start + BATCH]))
        return len(ours)

    async def _drain_until_done(self, client: aiomqtt.Client) -> None:
        while True:
            self._telemetry.beat(self.loop_name)
            self._outbox_ready.clear()
            sent = await self.publish_batch(client)
            # A short batch was all there was, unless a commit since has woken this loop:
            # no read that would find nothing.
            if sent == BATCH or self._outbox_ready.is_set():
                continue
            if self._writers_done.is_set():
                return
            await self._idle(IDLE_WAKE)

    async def publish_batch(self, client: aiomqtt.Client) -> int:
        """Publish the oldest rows concurrently; delete each once its PUBACK is in.

        A publish that failed or timed out may still have reached the broker: its row
        stays and goes again after the reconnect, and subscribers drop repeats by id.
        """
        async with self._store.reading() as conn:
            messages = await outbox.oldest(conn, BATCH)
        if not messages:
            return 0
        current = [m for m in messages if not m.superseded]
        results = await self._publish_all(client, [(m.topic, m.payload, m.retain) for m in current])
        acknowledged = [
            m.id for m, failure in zip(current, results, strict=True) if failure is None
        ]
        done = acknowledged + [m.id for m in messages if m.superseded]
        if done:
            await outbox.remove(self._store, done)
        _raise_first(results)
        return len(messages)

    async def _publish_all(
        self, client: aiomqtt.Client, messages: Sequence[Outgoing]
    ) -> list[BaseException | None]:
        """Publish with QoS 1, all at once; per message None once the broker acknowledged it."""
        results = await asyncio.gather(
            *(
                client.publish(
                    topic, payload, qos=1, retain=retain, timeout=self._config.publish_timeout
                )
                for topic, payload, retain in messages
            ),
            return_exceptions=True,
        )
        for result in results:
            if result is not None and not isinstance(result, aiomqtt.MqttError):
                raise result  # a bug or a cancellation, not the broker
        return results

    async def _idle(self, seconds: float) -> None:
        """Sleep, waking early for new outcomes or the end of the writers."""
        waiters = [
            asyncio.create_task(self._outbox_ready.wait(), name="publisher-wait-outbox"),
            asyncio.create_task(self._writers_done.wait(), name="publisher-wait-done"),
        ]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


def _acknowledgement(client: aiomqtt.Client, message: aiomqtt.Message) -> Callable[[], None]:
    """The message's PUBACK, sent when called. On this connection only: after a reconnect,
    the broker delivers an unacknowledged message again."""
    paho = client._client

    def acknowledge() -> None:
        paho.ack(message.mid, message.qos)

    return acknowledge


def _raise_first(results: Sequence[BaseException | None]) -> None:
    for result in results:
        if result is not None:
            raise result
