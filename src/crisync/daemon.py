"""The daemon: opens the resources, runs the loops in one TaskGroup, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from crisync.commands import Commands, ResyncAction
from crisync.config.model import Config, MqttConfig, PureConfig
from crisync.feed_status import FeedStatus
from crisync.handlers.base import HandlerContext
from crisync.handlers.dispatcher import Dispatcher, DispatchSettings
from crisync.handlers.pure_client import PureClient
from crisync.handlers.registry import HANDLERS
from crisync.handlers.resync import ElementsSource, resync_object
from crisync.listener.elements import ElementsClient, ElementsListener
from crisync.listener.unicat import UnicatListener
from crisync.listener.unicat_client import UnicatClient
from crisync.listener.writeback import ElementsWriteback
from crisync.metrics import serve_metrics
from crisync.publisher import Publisher
from crisync.state.store import Store
from crisync.systemd import SystemdNotifier, keep_systemd_informed
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.daemon")


class ShutdownDeadlineExceededError(Exception):
    """In-flight work did not finish within daemon.shutdown_timeout."""


@dataclass
class Lifecycle:
    """The events by which the loops hand over to each other on the way down."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # stop polling, finish in-flight
    feeds_done: asyncio.Event = field(default_factory=asyncio.Event)  # no listener will add work
    handlers_done: asyncio.Event = field(
        default_factory=asyncio.Event
    )  # no handler will add outcomes
    # no loop will add to the outbox: the handlers, the feed status and the commands are done
    outbox_closed: asyncio.Event = field(default_factory=asyncio.Event)
    work_ready: asyncio.Event = field(default_factory=asyncio.Event)  # inbox has new events
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)  # outbox has new rows


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        yield session


@dataclass(frozen=True)
class Running:
    """What the loops share: entered once in run_daemon, passed down explicitly."""

    config: Config
    store: Store
    session: aiohttp.ClientSession
    life: Lifecycle
    telemetry: Telemetry
    # One client for every request to Elements, so the gap between requests holds for all.
    elements: ElementsClient | None = None
    elements_writeback: ElementsWriteback | None = None


async def run_daemon(
    config: Config,
    *,
    once: bool = False,
    lifecycle: Lifecycle | None = None,
    telemetry: Telemetry | None = None,
) -> None:
    """`crisync run` (until SIGTERM) or `crisync once` (one sweep, drained)."""
    life = lifecycle or Lifecycle()
    async with contextlib.AsyncExitStack() as resources:
        store = await resources.enter_async_context(Store.open(config.state.path))
        session = await resources.enter_async_context(http_session())
        _install_signal_handlers(life.stopping)
        resources.callback(_remove_signal_handlers)
        telemetry = telemetry or Telemetry()
        running = Running(
            config, store, session, life, telemetry, *_elements(config, session, telemetry)
        )
        if config.metrics is not None:
            await resources.enter_async_context(
                serve_metrics(config.metrics, store, running.telemetry)
            )
        log.info("daemon.started", mode="once" if once else "run", state=str(config.state.path))
        try:
            await _run_loops(running, once=once)
        except* ShutdownDeadlineExceededError:
            log.warning("daemon.shutdown_deadline_exceeded", seconds=config.daemon.shutdown_timeout)
    log.info("daemon.stopped")


def _elements(
    config: Config, session: aiohttp.ClientSession, telemetry: Telemetry
) -> tuple[ElementsClient | None, ElementsWriteback | None]:
    if config.elements is None:
        return None, None
    client = ElementsClient(session, config.elements, telemetry=telemetry)
    writeback = ElementsWriteback(config.elements, client) if config.elements.writeback else None
    return client, writeback


async def _run_loops(running: Running, *, once: bool) -> None:
    config, life, telemetry = running.config, running.life, running.telemetry
    async with asyncio.TaskGroup() as group:
        loops = [group.create_task(_feeds(running, once=once), name="feeds")]
        if config.pure is not None:
            dispatcher = _dispatcher(running, config.pure)
            telemetry.expect(dispatcher.loop_name, dispatcher.beat_deadline)
            loops.append(
                group.create_task(
                    _then_set(dispatcher.run(), life.handlers_done), name="dispatcher"
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
            informing = keep_systemd_informed(notifier, running.store, telemetry, life.stopping)
            helpers.append(group.create_task(informing, name="systemd-notify"))
        await asyncio.wait(loops)
        for helper in helpers:
            helper.cancel()


def _mqtt_loops(
    group: asyncio.TaskGroup, running: Running, mqtt: MqttConfig
) -> list[asyncio.Task[None]]:
    """The publisher and the loops that write to the outbox besides the handlers."""
    config, life, telemetry = running.config, running.life, running.telemetry
    feed_status = FeedStatus(
        running.store,
        topic_prefix=mqtt.topic_prefix,
        outbox_ready=life.outbox_ready,
        until=life.handlers_done,
        telemetry=telemetry,
    )
    telemetry.expect(feed_status.loop_name, feed_status.beat_deadline)
    writers = [group.create_task(feed_status.run(), name=feed_status.loop_name)]
    commands = None
    if config.commands is not None:
        commands = Commands(
            config.commands,
            running.store,
            topic_prefix=mqtt.topic_prefix,
            work_ready=life.work_ready,
            outbox_ready=life.outbox_ready,
            until=life.handlers_done,
            resync=_resync_action(running),
        )
        writers.append(group.create_task(commands.run(), name=commands.loop_name))
    group.create_task(_set_when_done(writers, life.outbox_closed), name="outbox-closer")
    publisher = Publisher(
        mqtt,
        running.store,
        outbox_ready=life.outbox_ready,
        writers_done=life.outbox_closed,
        telemetry=telemetry,
        inbound=commands,
    )
    telemetry.expect(publisher.loop_name, publisher.beat_deadline)
    return [*writers, group.create_task(publisher.run(), name=publisher.loop_name)]


def _resync_action(running: Running) -> ResyncAction | None:
    """What the resync command does: fetch the object again and queue it (Elements only)."""
    if running.elements is None or running.config.elements is None:
        return None
    source = ElementsSource(running.elements, running.config.elements.url)

    async def resync(source_name: str, kind: str, key: str) -> str:
        event = await resync_object(running.store, source_name, kind, key, elements=source)
        running.life.work_ready.set()
        return f"{event.source}/{event.kind}/{event.key} queued for replication"

    return resync


def _dispatcher(running: Running, pure: PureConfig) -> Dispatcher:
    client = PureClient(running.session, pure, telemetry=running.telemetry)
    settings = DispatchSettings(
        # Twice as many handlers as Pure request slots: what a handler does between its
        # requests (mapping, state writes) overlaps others' requests, so the slots stay full.
        workers=2 * pure.concurrency,
        max_attempts=pure.max_attempts,
        topic_prefix=running.config.mqtt.topic_prefix if running.config.mqtt else None,
        refers_to=running.config.mappings.referred(),
    )
    return Dispatcher(
        running.store,
        HANDLERS,
        HandlerContext(
            running.store,
            client,
            pure,
            mappings=running.config.mappings,
            unicat=running.config.unicat,
            elements_writeback=running.elements_writeback,
        ),
        settings,
        work_ready=running.life.work_ready,
        outbox_ready=running.life.outbox_ready,
        stopping=running.life.stopping,
        feeds_done=running.life.feeds_done,
        telemetry=running.telemetry,
    )


async def _feeds(running: Running, *, once: bool) -> None:
    """Every listener, each in a task of its own; marks the feeds done when all have returned."""
    config, life, telemetry = running.config, running.life, running.telemetry
    try:
        async with asyncio.TaskGroup() as group:
            if config.elements is not None and running.elements is not None:
                if running.elements_writeback is not None:
                    # Once, before the first sweep: a misconfiguration is reported now.
                    await running.elements_writeback.verify()
                listener = ElementsListener(
                    config.elements,
                    running.elements,
                    running.store,
                    life.work_ready,
                    life.stopping,
                    telemetry=telemetry,
                )
                telemetry.expect(listener.loop_name, listener.beat_deadline)
                group.create_task(
                    listener.sweep_all() if once else listener.run(), name=listener.loop_name
                )
            if config.unicat is not None:
                unicat = UnicatListener(
                    config.unicat,
                    UnicatClient(running.session, config.unicat, telemetry=telemetry),
                    running.store,
                    work_ready=life.work_ready,
                    outbox_ready=life.outbox_ready,
                    stopping=life.stopping,
                    telemetry=telemetry,
                    topic_prefix=config.mqtt.topic_prefix if config.mqtt else None,
                )
                telemetry.expect(unicat.loop_name, unicat.beat_deadline)
                group.create_task(unicat.poll() if once else unicat.run(), name=unicat.loop_name)
    finally:
        life.feeds_done.set()
        life.work_ready.set()


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
