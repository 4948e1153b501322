"""A real MQTT subscriber that records what arrives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt


@dataclass
class Received:
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)  # time.monotonic() of each message
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on_topic(self, prefix: str) -> list[tuple[str, bytes, bool]]:
        return [m for m in self.messages if m[0].startswith(prefix)]

    def outcomes(self) -> list[dict[str, Any]]:
        return [json.loads(payload) for topic, payload, _ in self.messages if "/outcomes/" in topic]

    async def wait_for(self, condition: Callable[[Received], bool], within: float = 20) -> None:
        async with asyncio.timeout(within):
            while not condition(self):
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def subscribed(port: int, topic: str) -> AsyncIterator[Received]:
    """Subscribe (QoS 1) before the block runs; collect messages until it ends."""
    received = Received()
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-sub-{id(received)}") as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                received.messages.append((str(message.topic), payload, bool(message.retain)))
                received.arrival.append(time.monotonic())
                received.arrived.set()

        async with asyncio.TaskGroup() as group:
            collector = group.create_task(collect(), name="test-subscriber")
            try:
                yield received
            finally:
                collector.cancel()
