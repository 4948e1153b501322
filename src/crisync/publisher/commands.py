"""Operator commands over MQTT, answered on {prefix}/cmd/result.

`{prefix}/cmd/retry` with `{"all": true}` or `{"key": "source/kind/key"}` puts dead
letters back in the inbox; `{prefix}/cmd/resync` with `{"source", "kind", "key"}` has an
object replicated again. Either may carry a `request_id`, echoed in the answer. The
publisher's connection receives them (QoS 1, in its persistent session, so commands sent
while crisync is away wait for it); this loop carries them out one at a time and queues
each answer in the outbox.

A command is acknowledged to the broker only once it was carried out and its answer
committed: until then the broker keeps it in the session, and delivers it again at the
next connect if crisync died in between. So a command is carried out at least once, and
twice only when crisync died, or the connection dropped, after it was taken and before its
acknowledgement reached the broker (retry and resync may run twice without harm). One that
arrives after this loop closed, while the connection drains the outbox, is not acknowledged
at all: the broker delivers it again at the next start.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crisync.config.model import CommandName, CommandsConfig
from crisync.errors import CrisyncError
from crisync.lifecycle import Lifecycle
from crisync.state import dead_letters, outbox
from crisync.state.store import Store

log = structlog.get_logger("crisync.publisher.commands")

RESULT_SCHEMA = "crisync.command-result/1"
STOPPING = "crisync is stopping; send the command again"

# Replicate one object again: (source, kind, key) → what was done, in words.
# Raises CrisyncError when it cannot be done.
ResyncAction = Callable[[str, str, str], Awaitable[str]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str | None = Field(None, max_length=200)


class RetryBody(_Body):
    all: bool = False
    key: str | None = Field(None, pattern=r"^[^/]+/[^/]+/.+$", description="source/kind/key")

    @model_validator(mode="after")
    def _one_target(self) -> RetryBody:
        if self.all == (self.key is not None):
            raise ValueError('give either "all": true or "key": "source/kind/key"')
        return self


class ResyncBody(_Body):
    source: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    key: str = Field(min_length=1)


def _nothing_to_acknowledge() -> None:
    """A command that did not come from the broker."""


@dataclass(frozen=True)
class Command:
    name: CommandName
    payload: bytes
    retained: bool
    # Tells the broker the command is done with: called once its answer is committed.
    acknowledge: Callable[[], None] = _nothing_to_acknowledge


@dataclass(frozen=True)
class CommandResult:
    command: str
    request_id: str | None
    ok: bool
    message: str

    def payload(self) -> str:
        return json.dumps(
            {
                "schema": RESULT_SCHEMA,
                "command": self.command,
                "request_id": self.request_id,
                "ok": self.ok,
                "message": self.message,
            },
            separators=(",", ":"),
        )


class Commands:
    """The allowed commands' topics, their queue, and the loop that carries them out."""

    loop_name = "commands"

    def __init__(
        self,
        config: CommandsConfig,
        store: Store,
        *,
        topic_prefix: str,
        life: Lifecycle,
        resync: ResyncAction | None,
    ) -> None:
        """Once `life.handlers_done`, commands stop; `resync` None: not available."""
        self._store = store
        self._work_ready = life.work_ready
        self._outbox_ready = life.outbox_ready
        self._until = life.handlers_done
        self._resync = resync
        self._names: dict[str, CommandName] = {
            f"{topic_prefix}/cmd/{name}": name for name in config.allow
        }
        self.result_topic = f"{topic_prefix}/cmd/result"
        self._queue: asyncio.Queue[Command] = asyncio.Queue()
        self._closed = False

    @property
    def topics(self) -> list[str]:
        return list(self._names)

    def deliver(
        self,
        topic: str,
        payload: bytes,
        *,
        retained: bool,
        acknowledge: Callable[[], None] = _nothing_to_acknowledge,
    ) -> None:
        command = Command(self._names[topic], payload, retained, acknowledge)
        if self._closed:
            # Nobody will carry it out and the outbox is closed to its answer: left
            # unacknowledged, it stays in the persistent session for the next start.
            log.info(
                "command.left_for_next_start", command=command.name, request_id=_request_id(payload)
            )
            return
        self._queue.put_nowait(command)

    async def run(self) -> None:
        """Carry out commands as they arrive, until `until` is set."""
        until = asyncio.create_task(self._until.wait(), name="commands-until")
        next_command: asyncio.Task[Command] | None = None
        try:
            while not self._until.is_set():
                next_command = asyncio.create_task(self._queue.get(), name="commands-next")
                await asyncio.wait({next_command, until}, return_when=asyncio.FIRST_COMPLETED)
                if next_command.done():
                    command = next_command.result()
                    await self.carry_out(command)
                    command.acknowledge()
            if next_command is not None:
                next_command.cancel()  # before the queue is emptied, so it takes nothing
            # Taken off the connection but not carried out: say so, then close.
            while not self._queue.empty():
                command = self._queue.get_nowait()
                await self._answer(command, _request_id(command.payload), False, STOPPING)
                command.acknowledge()
        finally:
            self._closed = True
            for waiter in (until, next_command):
                if waiter is not None:
                    waiter.cancel()

    async def carry_out(self, command: Command) -> CommandResult:
        """Do what the command asks and queue its answer."""
        request_id = _request_id(command.payload)
        if command.retained:
            # A retained command would run again at every reconnect.
            return await self._answer(
                command, request_id, False, "retained commands are ignored; publish without retain"
            )
        shape = RetryBody if command.name == "retry" else ResyncBody
        try:
            body = shape.model_validate_json(command.payload)
        except ValidationError as exc:
            return await self._answer(command, request_id, False, _problems(exc))
        if isinstance(body, RetryBody):
            return await self._retry(command, body)
        return await self._resync_one(command, body)

    async def _retry(self, command: Command, body: RetryBody) -> CommandResult:
        async with self._store.transaction() as conn:
            done = await dead_letters.requeue(conn, None if body.all else body.key)
            message = (
                f"requeued {done.requeued} dead letter(s); "
                f"{done.superseded} dropped as superseded by a newer change"
            )
            found = body.all or done.requeued + done.superseded > 0
            # The requeue and its answer commit together.
            result = await self._queue_answer(
                conn,
                command,
                body.request_id,
                found,
                message if found else f"no dead letter for {body.key}",
            )
        if done.requeued:
            self._work_ready.set()
        self._outbox_ready.set()
        _log(result)
        return result

    async def _resync_one(self, command: Command, body: ResyncBody) -> CommandResult:
        if self._resync is None:
            return await self._answer(
                command, body.request_id, False, "resync is not available in this crisync"
            )
        try:
            message = await self._resync(body.source, body.kind, body.key)
        except CrisyncError as exc:
            return await self._answer(command, body.request_id, False, exc.message)
        except Exception as exc:
            # A bug behind one command must not stop the daemon; it is logged with its trace.
            log.exception("command.crashed", command=command.name, request_id=body.request_id)
            return await self._answer(
                command, body.request_id, False, f"internal error: {type(exc).__name__}"
            )
        return await self._answer(command, body.request_id, True, message)

    async def _answer(
        self, command: Command, request_id: str | None, ok: bool, message: str
    ) -> CommandResult:
        async with self._store.transaction() as conn:
            result = await self._queue_answer(conn, command, request_id, ok, message)
        self._outbox_ready.set()
        _log(result)
        return result

    async def _queue_answer(
        self,
        conn: aiosqlite.Connection,
        command: Command,
        request_id: str | None,
        ok: bool,
        message: str,
    ) -> CommandResult:
        result = CommandResult(command.name, request_id, ok, message)
        await outbox.add(conn, self.result_topic, result.payload())
        return result


def _log(result: CommandResult) -> None:
    fields = {"command": result.command, "request_id": result.request_id, "message": result.message}
    if result.ok:
        log.info("command.done", **fields)
    else:
        log.warning("command.refused", **fields)


def _request_id(payload: bytes) -> str | None:
    """The request id of a body that may be invalid otherwise, to echo in any answer."""
    try:
        document: Any = json.loads(payload)
    except ValueError:
        return None
    value = document.get("request_id") if isinstance(document, dict) else None
    return value[:200] if isinstance(value, str) else None


def _problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "invalid command: " + "; ".join(problems)
