"""The daemon: opens the resources, runs the loops in one TaskGroup, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import structlog

from crisync.config.model import Config, MqttConfig
from crisync.errors import PermanentError
from crisync.handlers.base import FirstWriteRefusedError, Target
from crisync.handlers.dispatcher import Dispatcher, DispatchSettings
from crisync.handlers.routing import route
from crisync.handlers.targets import open_targets
from crisync.lifecycle import Lifecycle
from crisync.listener.base import Source, SourceContext, queue_resync
from crisync.listener.sources import open_sources
from crisync.metrics import serve_metrics
from crisync.publisher.commands import Commands, ResyncAction
from crisync.publisher.feed_status import FeedStatus
from crisync.publisher.mqtt import Publisher
from crisync.state.inbox import ChangeEvent
from crisync.state.store import StateDiskFullError, Store
from crisync.systemd import SystemdNotifier, keep_systemd_informed
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.daemon")

_E = TypeVar("_E", bound=BaseException)


@dataclass(frozen=True)
class RunSummary:
    """What a run leaves undone, for `crisync once`'s exit status."""

    unavailable: tuple[str, ...]  # APIs that stayed out: their work waits for the next run
    dead_letters: int  # changes this run gave up on for good
    # Of the unavailable, those refusing what the configuration makes crisync send
    refused_configuration: tuple[str, ...] = ()


class ShutdownDeadlineExceededError(Exception):
    """In-flight work did not finish within daemon.shutdown_timeout."""


# A loop of the daemon failed: a bug (EX_SOFTWARE of sysexits.h). systemd restarts it.
EX_LOOP_FAILED = 70


class LoopFailedError(SystemExit):
    """A loop ended with an exception nothing expected: the daemon exits EX_LOOP_FAILED.

    An exit, not an error for the command line to report: `daemon.loop_failed` has said
    what failed, in one line, where the TaskGroup would have given a group's traceback.
    """

    def __init__(self, failure: BaseException) -> None:
        super().__init__(EX_LOOP_FAILED)
        self.failure = failure


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        yield session


# The configured sources, given the resources their loops share (tests plug in their own).
SourceFactory = Callable[[Config, SourceContext], list[Source]]


class TargetFactory(Protocol):
    """The configured targets, given the resources they share (`crisync plan` plugs in its own)."""

    def __call__(
        self,
        config: Config,
        *,
        store: Store,
        session: aiohttp.ClientSession,
        telemetry: Telemetry,
    ) -> dict[str, Target]: ...


@dataclass(frozen=True)
class Running:
    """What the loops share: entered once in run_daemon, passed down explicitly."""

    config: Config
    context: SourceContext  # the store, the HTTP session, the lifecycle, the telemetry
    sources: list[Source]
    targets: dict[str, Target]


async def run_daemon(
    config: Config,
    *,
    once: bool = False,
    lifecycle: Lifecycle | None = None,
    telemetry: Telemetry | None = None,
    sources: SourceFactory = open_sources,
    targets: TargetFactory = open_targets,
    allow_empty_state: bool = False,
) -> RunSummary:
    """`crisync run` (until SIGTERM) or `crisync once` (one sweep, drained).

    ForeignStateError: a target holds content crisync wrote that the state database does
    not know, and `allow_empty_state` does not say to replicate anyway.
    """
    life = lifecycle or Lifecycle()
    telemetry = telemetry or Telemetry()
    async with contextlib.AsyncExitStack() as resources:
        store = await resources.enter_async_context(Store.open(config.state.path))
        session = await resources.enter_async_context(http_session())
        _install_signal_handlers(life.stopping)
        resources.callback(_remove_signal_handlers)
        prefix = config.mqtt.topic_prefix if config.mqtt else None
        context = SourceContext(store, session, life, telemetry, topic_prefix=prefix)
        running = Running(
            config,
            context,
            sources(config, context),
            targets(config, store=store, session=session, telemetry=telemetry),
        )
        if config.metrics is not None:
            await resources.enter_async_context(serve_metrics(config.metrics, store, telemetry))
        log.info("daemon.started", mode="once" if once else "run", state=str(config.state.path))
        summary = RunSummary((), 0)
        try:
            summary = await _run_loops(running, once=once, check_state=not allow_empty_state)
        except* ShutdownDeadlineExceededError:
            log.warning("daemon.shutdown_deadline_exceeded", seconds=config.daemon.shutdown_timeout)
        except* StateDiskFullError as full:
            # Every loop that wrote met the same full disk: one of them says so, without a
            # group's traceback. What they were writing was rolled back, to be done again.
            raise _first_leaf(full) from None
        except* FirstWriteRefusedError as foreign:
            raise _first_leaf(foreign) from None  # before any write: nothing to undo
        except* Exception as failed:  # noqa: BLE001 - any bug in a loop ends the daemon so
            failure = _first_leaf(failed)
            log.error(  # noqa: TRY400 - one line, where a group's traceback would say no more
                "daemon.loop_failed",
                error_class=type(failure).__name__,
                error=str(failure),
                where=_innermost_frame(failure),
                exit_code=EX_LOOP_FAILED,
            )
            raise LoopFailedError(failure) from None
    log.info("daemon.stopped", requests=telemetry.request_totals())
    return replace(summary, dead_letters=telemetry.outcomes["failed"])


def _first_leaf(group: BaseExceptionGroup[_E]) -> _E:
    first: _E | BaseExceptionGroup[_E] = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _innermost_frame(failure: BaseException) -> str:
    """Where the failure was raised, in crisync's code if it passed there: file:line in function."""
    package = Path(__file__).parent
    frames = traceback.extract_tb(failure.__traceback__)
    ours = [frame for frame in frames if Path(frame.filename).is_relative_to(package)]
    if not (ours or frames):
        return "unknown"
    frame = (ours or frames)[-1]
    place = Path(frame.filename)
    if place.is_relative_to(package):
        place = place.relative_to(package.parent)
    return f"{place}:{frame.lineno} in {frame.name}"


async def _run_loops(running: Running, *, once: bool, check_state: bool) -> RunSummary:
    """Every loop, until they end; what the dispatcher left undone (dead letters aside)."""
    config, life, telemetry = running.config, running.context.life, running.context.telemetry
    dispatcher = None
    # The publisher and the status loops need no source: they start at once, so a source
    # slow to answer its start checks holds back neither the outbox nor the status.
    sources_started = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        loops = [group.create_task(_feeds(running, sources_started, once=once), name="feeds")]
        if running.targets:
            dispatcher = _dispatcher(running, once=once, check_state=check_state)
            telemetry.expect(dispatcher.loop_name, dispatcher.beat_deadline)
            loops.append(
                group.create_task(
                    _then_set(_after(sources_started, dispatcher.run), life.handlers_done),
                    name="dispatcher",
                )
            )
        else:
            life.handlers_done.set()
        if config.mqtt is not None:
            loops.extend(_mqtt_loops(group, running, config.mqtt))
        helpers = [
            group.create_task(
                _shutdown_deadline(life.stopping, config.daemon.shutdown_timeout),
                name="shutdown-deadline",
            )
        ]
        notifier = SystemdNotifier.from_environment(os.environ)
        if notifier is not None:
            informing = keep_systemd_informed(
                notifier, running.context.store, telemetry, life.stopping
            )
            helpers.append(group.create_task(informing, name="systemd-notify"))
        await asyncio.wait(loops)
        for helper in helpers:
            helper.cancel()
    if dispatcher is None:
        return RunSummary((), 0)
    return RunSummary(tuple(dispatcher.gave_up), 0, tuple(dispatcher.refused_configuration))


def _mqtt_loops(
    group: asyncio.TaskGroup, running: Running, mqtt: MqttConfig
) -> list[asyncio.Task[None]]:
    """The publisher and the loops that write to the outbox besides the handlers."""
    config, store = running.config, running.context.store
    life, telemetry = running.context.life, running.context.telemetry
    feed_status = FeedStatus(store, topic_prefix=mqtt.topic_prefix, life=life, telemetry=telemetry)
    telemetry.expect(feed_status.loop_name, feed_status.beat_deadline)
    writers = [group.create_task(feed_status.run(), name=feed_status.loop_name)]
    commands = None
    if config.commands is not None:
        commands = Commands(
            config.commands,
            store,
            topic_prefix=mqtt.topic_prefix,
            life=life,
            resync=_resync_action(running),
        )
        writers.append(group.create_task(commands.run(), name=commands.loop_name))
    group.create_task(_set_when_done(writers, life.outbox_closed), name="outbox-closer")
    publisher = Publisher(mqtt, store, life=life, telemetry=telemetry, inbound=commands)
    telemetry.expect(publisher.loop_name, publisher.beat_deadline)
    return [*writers, group.create_task(publisher.run(), name=publisher.loop_name)]


def _resync_action(running: Running) -> ResyncAction:
    """What the resync command does: fetch the object from its source again and queue it."""

    async def resync(source_name: str, kind: str, key: str) -> str:
        event = await resync_event(running.sources, source_name, kind, key)
        await queue_resync(running.context.store, event)
        running.context.life.work_ready.set()
        return f"{event.source}/{event.kind}/{event.key} queued for replication"

    return resync


async def resync_event(sources: list[Source], source_name: str, kind: str, key: str) -> ChangeEvent:
    """The object as its source holds it now; PermanentError when no such source runs."""
    source = next((s for s in sources if s.name == source_name), None)
    if source is None:
        names = ", ".join(s.name for s in sources) or "none"
        raise PermanentError(
            f"no source {source_name!r} is configured (configured: {names})", api="crisync"
        )
    return await source.resync(kind, key)


def _dispatcher(running: Running, *, once: bool, check_state: bool) -> Dispatcher:
    config, targets = running.config, running.targets.values()
    settings = DispatchSettings(
        workers=sum(target.workers for target in targets),
        max_attempts=max(target.max_attempts for target in targets),
        park_duration=max(target.park_duration for target in targets),
        topic_prefix=config.mqtt.topic_prefix if config.mqtt else None,
        refers_to=config.mappings.referred(),
        give_up_after=config.daemon.once_outage_timeout if once else None,
        check_state=check_state,
    )
    return Dispatcher(
        running.context.store,
        route(config.mappings, running.targets, running.sources),
        settings,
        life=running.context.life,
        telemetry=running.context.telemetry,
    )


async def _feeds(running: Running, started: asyncio.Event, *, once: bool) -> None:
    """Every source's start checks (then `started` is set), then its loops, each in a task of
    its own; marks the feeds done when all returned."""
    life, telemetry = running.context.life, running.context.telemetry
    try:
        for source in running.sources:
            # Once, before the first poll and before the dispatcher may write what an
            # earlier run queued: a misconfiguration is reported now, a refusal stops the run.
            await source.start()
        started.set()
        async with asyncio.TaskGroup() as group:
            for source in running.sources:
                for loop in source.loops(once=once):
                    telemetry.expect(loop.name, loop.beat_deadline)
                    group.create_task(loop.run(), name=loop.name)
    finally:
        life.feeds_done.set()
        life.work_ready.set()


async def _after(event: asyncio.Event, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    await event.wait()
    await work()


async def _then_set(work: Coroutine[Any, Any, None], done: asyncio.Event) -> None:
    try:
        await work
    finally:
        done.set()


async def _set_when_done(tasks: list[asyncio.Task[None]], done: asyncio.Event) -> None:
    try:
        await asyncio.wait(tasks)
    finally:
        done.set()


async def _shutdown_deadline(stopping: asyncio.Event, seconds: float) -> None:
    await stopping.wait()
    log.info("daemon.stopping", deadline_seconds=seconds)
    await asyncio.sleep(seconds)
    raise ShutdownDeadlineExceededError


def _install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)


def _remove_signal_handlers() -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
