"""The publisher: drains the outbox to MQTT with QoS 1; a row goes only once the broker has it."""

from __future__ import annotations

import asyncio

import aiomqtt
import structlog

from crisync.backoff import full_jitter
from crisync.config.model import MqttConfig
from crisync.state import outbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.publisher")

BATCH = 100
IDLE_WAKE = 1.0
CONNECT_TIMEOUT = 10.0


def status_topic(prefix: str) -> str:
    return f"{prefix}/status"


class Publisher:
    loop_name = "publisher"
    # Beats come at least every reconnect delay (30 s at most) plus a connect timeout.
    beat_deadline = 120.0

    def __init__(
        self,
        config: MqttConfig,
        store: Store,
        *,
        outbox_ready: asyncio.Event,
        handlers_done: asyncio.Event,
        telemetry: Telemetry,
    ) -> None:
        self._telemetry = telemetry
        self._config = config
        self._store = store
        self._outbox_ready = outbox_ready
        self._handlers_done = handlers_done
        self._status = status_topic(config.topic_prefix)

    def _client(self) -> aiomqtt.Client:
        password = self._config.password.get_secret_value() if self._config.password else None
        client = aiomqtt.Client(
            self._config.host,
            self._config.port,
            identifier=self._config.client_id,
            username=self._config.username,
            password=password,
            timeout=CONNECT_TIMEOUT,
            will=aiomqtt.Will(self._status, "offline", qos=1, retain=True),
            max_inflight_messages=BATCH,
        )
        # A whole batch in flight is the plan, not a backlog worth warning about.
        client.pending_calls_threshold = BATCH + 2
        return client

    async def run(self) -> None:
        """Publish until the handlers are done and the outbox is empty, reconnecting as needed.

        When the handlers are done but the broker cannot be reached, the outcomes stay
        in the outbox for the next start.
        """
        attempt = 0
        while True:
            try:
                async with self._client() as client:
                    attempt = 0
                    await client.publish(self._status, "online", qos=1, retain=True)
                    log.info("mqtt.connected", host=self._config.host, port=self._config.port)
                    await self._drain_until_done(client)
                    await client.publish(self._status, "offline", qos=1, retain=True)
                    log.info("mqtt.offline_published")
                    return
            except aiomqtt.MqttError as exc:
                attempt += 1
                if self._handlers_done.is_set():
                    async with self._store.reading() as conn:
                        left = await outbox.depth(conn)
                    log.warning("mqtt.unreachable_at_shutdown", error=str(exc), outbox_left=left)
                    return
                # Retrying a broker that is down is this loop's work: it is alive.
                self._telemetry.beat(self.loop_name)
                delay = full_jitter(attempt, base=1.0, cap=30.0)
                log.warning("mqtt.disconnected", error=str(exc), retry_in=round(delay, 2))
                await self._wait(delay)

    async def _drain_until_done(self, client: aiomqtt.Client) -> None:
        while True:
            self._telemetry.beat(self.loop_name)
            self._outbox_ready.clear()
            sent = await self.publish_batch(client)
            if sent:
                continue
            if self._handlers_done.is_set():
                return
            await self._wait(IDLE_WAKE)

    async def publish_batch(self, client: aiomqtt.Client) -> int:
        """Publish the oldest rows concurrently; delete them once every PUBACK is in."""
        async with self._store.reading() as conn:
            messages = await outbox.oldest(conn, BATCH)
        if not messages:
            return 0
        try:
            async with asyncio.TaskGroup() as group:
                for message in messages:
                    group.create_task(
                        client.publish(
                            message.topic, message.payload, qos=1, retain=message.retain
                        ),
                        name=f"publish-{message.id}",
                    )
        except* aiomqtt.MqttError as failures:
            # Nothing is deleted: a publish that timed out may have reached the broker,
            # so the whole batch goes again and subscribers drop repeats by id.
            raise failures.exceptions[0] from None
        async with self._store.transaction() as conn:
            await outbox.remove(conn, [message.id for message in messages])
        return len(messages)

    async def _wait(self, seconds: float) -> None:
        """Sleep, waking early for new outcomes or the end of the handlers."""
        waiters = [
            asyncio.create_task(self._outbox_ready.wait(), name="publisher-wait-outbox"),
            asyncio.create_task(self._handlers_done.wait(), name="publisher-wait-done"),
        ]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
