"""A loopback TCP relay to a broker: it can stop listening, and swallow the broker's replies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class Connection:
    swallow_replies: bool = False  # drop server → client bytes; client → server still flows


class Relay:
    def __init__(self, target_port: int, pipes: asyncio.TaskGroup) -> None:
        self._target_port = target_port
        self._pipes = pipes
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self.connections: list[Connection] = []
        self.port = 0

    async def listen(self) -> None:
        """Accept connections (on the same port as before, if there was one)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop_listening(self) -> None:
        """New connections are refused, as by a host whose broker is down."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def swallow_replies_of_open_connections(self) -> None:
        """Acknowledgements on the current connections are lost; new connections work."""
        for connection in self.connections:
            connection.swallow_replies = True

    def close(self) -> None:
        self.stop_listening()
        for task in self._tasks:
            task.cancel()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                "127.0.0.1", self._target_port
            )
        except OSError:
            client_writer.close()
            return
        connection = Connection()
        self.connections.append(connection)
        self._tasks += [
            self._pipes.create_task(_pipe(client_reader, server_writer, connection, replies=False)),
            self._pipes.create_task(_pipe(server_reader, client_writer, connection, replies=True)),
        ]


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    connection: Connection,
    *,
    replies: bool,
) -> None:
    try:
        while data := await reader.read(65536):
            if not (replies and connection.swallow_replies):
                writer.write(data)
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def relay_to(port: int) -> AsyncIterator[Relay]:
    async with asyncio.TaskGroup() as pipes:
        relay = Relay(port, pipes)
        await relay.listen()
        try:
            yield relay
        finally:
            relay.close()
