"""The dispatcher under Pure's throttling: backfill held outside its window while changes
flow, and a spent quota holding work without failing it. The clock is the test's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp
import pytest
import structlog

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.base import Target
from crisync.handlers.dispatcher import Dispatcher, DispatchSettings, backfill_claims
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.pacing import PurePacing
from crisync.handlers.pure.sim import PureSimulator
from crisync.handlers.pure.target import PureTarget
from crisync.handlers.routing import route
from crisync.handlers.throttle import Clock, SystemClock
from crisync.lifecycle import Lifecycle
from crisync.listener.elements.sim import ElementsSimulator
from crisync.state import dead_letters, inbox, mapping
from crisync.state.store import Store, utc_now
from crisync.status import read_status, render_status
from crisync.telemetry import Telemetry
from tests.support.clock import FakeClock
from tests.support.events import enqueue, user
from tests.support.wait import until

NOON = datetime(2026, 12, 5, 12, 0).astimezone()
QUOTA = 4


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@contextlib.asynccontextmanager
async def throttled(config: Config, clock: Clock, **limits: object) -> AsyncIterator[PureContext]:
    """The Pure context with these [pure] limits, on the test's clock."""
    assert config.pure is not None
    paced: PureConfig = config.pure.model_copy(update=limits)
    async with Store.open(config.state.path) as store, aiohttp.ClientSession() as session:
        telemetry = Telemetry()
        pacing = PurePacing(paced, telemetry=telemetry, clock=clock)
        client = PureClient(session, paced, telemetry=telemetry, pacing=pacing)
        yield PureContext(store, client, paced, config.mappings)


def dispatcher(
    context: PureContext, life: Lifecycle, telemetry: Telemetry, *, max_attempts: int = 3
) -> Dispatcher:
    return Dispatcher(
        context.store,
        route(context.mappings, {"pure": PureTarget(context)}, []),
        DispatchSettings(workers=4, max_attempts=max_attempts, park_duration=300, topic_prefix="t"),
        life=life,
        telemetry=telemetry,
    )


async def mapped(store: Store) -> set[str]:
    async with store.reading() as conn:
        return {key for _, _, key in await mapping.keys(conn, "elements", "user")}


async def status(store: Store) -> str:
    return render_status(await read_status(store))


async def test_backfill_waits_outside_its_window_while_changes_flow(
    config: Config, clock: FakeClock
) -> None:
    async with throttled(config, clock, backfill_window="22:00-06:00") as context:
        await backfill_waits_then_flows(context, clock)


async def backfill_waits_then_flows(throttled: PureContext, clock: FakeClock) -> None:
    store = throttled.store
    await enqueue(store, *(user(str(n), f"Backfilled {n}") for n in range(3)), backfill=True)
    await enqueue(store, user("9", "Changed"))
    telemetry = Telemetry()
    life = Lifecycle()
    life.feeds_done.set()  # as `crisync once` runs: until nothing it may do is pending
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(20):
            await dispatcher(throttled, life, telemetry).run()
    assert await mapped(store) == {"9"}
    async with store.reading() as conn:
        assert await inbox.pending_count(conn, backfill=True) == 3
        assert await dead_letters.count(conn) == 0
    [held] = [e for e in logs if e["event"] == "backfill.held"]
    assert held["reason"] == "outside the backfill window 22:00-06:00 (local time)"
    assert telemetry.backfill_waits == held["reason"]
    assert (
        "backfill: 3 events wait, outside the backfill window 22:00-06:00 (local time)"
        in (await status(store)).splitlines()
    )

    clock.set_local(NOON.replace(hour=23))
    life = Lifecycle()
    life.feeds_done.set()
    async with asyncio.timeout(20):
        await dispatcher(throttled, life, telemetry).run()
    assert await mapped(store) == {"0", "1", "2", "9"}
    assert telemetry.backfill_waits is None
    assert "backfill:" not in await status(store)


async def test_a_spent_quota_holds_the_work_untried_until_the_hour_refills_it(
    config: Config, clock: FakeClock, pure_sim: PureSimulator
) -> None:
    async with throttled(config, clock, hourly_quota=QUOTA) as context:
        await spent_quota_holds(context, clock, pure_sim)


async def spent_quota_holds(
    throttled: PureContext, clock: FakeClock, pure_sim: PureSimulator
) -> None:
    store = throttled.store
    pure_sim.throttle(hourly_quota=QUOTA, clock=clock.monotonic)
    await enqueue(store, *(user(str(n), f"Person {n}") for n in range(4)))
    telemetry = Telemetry()
    life = Lifecycle()
    running = asyncio.create_task(dispatcher(throttled, life, telemetry).run())
    with structlog.testing.capture_logs() as logs:
        await until(lambda: pure_sim.received == QUOTA)
        await asyncio.sleep(0.3)  # nothing more goes, and nothing fails
        assert pure_sim.received == QUOTA
        assert throttled.pure.pacing.spent()
        async with store.reading() as conn:
            assert await dead_letters.count(conn) == 0
            waiting = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=10)
        assert waiting
        assert {event.attempts for event in waiting} == {0}
        async with asyncio.timeout(10):
            while sum(telemetry.outcomes.values()) < 4:
                clock.advance(3601)  # an hour on: the quota refills
                life.work_ready.set()
                await asyncio.sleep(0.1)
        life.stopping.set()
        life.work_ready.set()
        await running
    assert telemetry.outcomes == {"created": 4}
    assert not pure_sim.throttled  # Pure never had to refuse one
    assert "pure.quota_spent" in [e["event"] for e in logs]
    assert "pure hourly quota: " in await status(store)


def test_backfill_leaves_a_share_of_the_handlers_to_changes() -> None:
    assert backfill_claims(8, 0.2) == 6
    assert backfill_claims(2, 0.2) == 1
    assert backfill_claims(1, 0.5) == 1  # one handler: backfill still moves
    assert backfill_claims(8, 0.0) is None


async def test_a_restart_counts_the_requests_the_last_run_sent_within_the_hour(
    config: Config, clock: FakeClock
) -> None:
    async with throttled(config, clock, hourly_quota=10) as context:
        await enqueue(context.store, user("1", "Lovelace"))
        life = Lifecycle()
        life.feeds_done.set()
        await dispatcher(context, life, Telemetry()).run()
        sent = context.pure.pacing.figures().used
        assert sent >= 2  # the person's create and lock, at least
    clock.advance(600)
    async with throttled(config, clock, hourly_quota=10) as restarted:
        assert restarted.pure.pacing.figures().used == 0
        life = Lifecycle()
        life.feeds_done.set()
        await dispatcher(restarted, life, Telemetry()).run()
        assert restarted.pure.pacing.figures().used == sent
        said = await status(restarted.store)
    assert f"pure hourly quota: {10 - sent} of 10 requests left" in said
    async with throttled(config, clock) as unlimited:  # the quota taken out of the configuration
        life = Lifecycle()
        life.feeds_done.set()
        await dispatcher(unlimited, life, Telemetry()).run()
        assert "hourly quota" not in await status(unlimited.store)


async def test_once_outside_the_window_leaves_the_first_pass_waiting_and_takes_it_at_night(
    config: Config, clock: FakeClock, pure_sim: PureSimulator, elements_sim: ElementsSimulator
) -> None:
    assert config.pure is not None
    nights = config.model_copy(
        update={"pure": config.pure.model_copy(update={"backfill_window": "22:00-06:00"})}
    )

    def targets(
        config: Config, *, store: Store, session: aiohttp.ClientSession, telemetry: Telemetry
    ) -> dict[str, Target]:
        assert config.pure is not None
        pure = PureTarget.open(
            config.pure,
            config.mappings,
            store=store,
            session=session,
            telemetry=telemetry,
            clock=clock,
        )
        return {"pure": pure}

    objects = len(elements_sim.object_ids("user")) + len(elements_sim.object_ids("publication"))
    summary = await run_daemon(nights, once=True, targets=targets)
    assert summary.dead_letters == 0
    assert pure_sim.objects("research-outputs") == {}  # the first pass is backfill: it waits
    async with Store.open(config.state.path) as store:
        async with store.reading() as conn:
            assert await inbox.pending_count(conn, backfill=True) == objects
        said = await status(store)
    assert f"backfill: {objects} events wait, outside the backfill window" in said

    clock.set_local(NOON.replace(hour=23))
    summary = await run_daemon(nights, once=True, targets=targets)
    assert summary.dead_letters == 0
    assert len(pure_sim.objects("research-outputs")) == len(elements_sim.object_ids("publication"))
    async with Store.open(config.state.path) as store, store.reading() as conn:
        assert await inbox.pending_count(conn) == 0


async def test_a_429_with_retry_after_keeps_the_objects_attempts(
    config: Config, pure_sim: PureSimulator
) -> None:
    # The real clock: the pauses are short and real.
    async with throttled(config, SystemClock(), retry_after_cap=0.05) as context:
        await enqueue(context.store, user("1", "Lovelace"))
        # Three 429s (the client's tries of one request), then one more: with one attempt
        # allowed, the object would be a dead letter were a throttled try counted.
        pure_sim.fail_next(429, count=4, retry_after=3600)
        telemetry = Telemetry()
        life = Lifecycle()
        life.feeds_done.set()
        async with asyncio.timeout(20):
            await dispatcher(context, life, telemetry, max_attempts=1).run()
        async with context.store.reading() as conn:
            assert await dead_letters.count(conn) == 0
    assert telemetry.outcomes == {"created": 1}
