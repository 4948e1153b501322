"""Pacing to Pure's limits, counted against the simulator over loopback: the hourly quota,
backfill's share of it, requests per second, and Retry-After capped."""

from __future__ import annotations

import asyncio
from datetime import datetime

import aiohttp
import pytest
import structlog

from crisync.config.model import Config
from crisync.errors import RetriableError
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.pacing import PurePacing
from crisync.handlers.pure.sim import PureSimulator
from crisync.handlers.throttle import BackfillWindow, backfill_work
from crisync.telemetry import Telemetry
from tests.support.clock import FakeClock
from tests.support.wait import until

NOON = datetime(2026, 12, 5, 12, 0).astimezone()


def limited(config: Config, **limits: object) -> PureConfig:
    assert config.pure is not None
    return config.pure.model_copy(update=limits)


def paced_client(
    session: aiohttp.ClientSession, config: PureConfig, clock: FakeClock | None = None
) -> tuple[PureClient, Telemetry]:
    telemetry = Telemetry()
    pacing = PurePacing(config, telemetry=telemetry, clock=clock)
    return PureClient(session, config, telemetry=telemetry, pacing=pacing), telemetry


def sent(sim: PureSimulator) -> int:
    return sum(sim.request_counts.values())


async def test_the_hourly_quota_holds_requests_until_the_hour_lets_them_go(
    config: Config, pure_sim: PureSimulator, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(NOON)
    pure_sim.throttle(hourly_quota=5, clock=clock.monotonic)
    client, telemetry = paced_client(session, limited(config, hourly_quota=5), clock)
    organization = pure_sim.organization_uuids[0]
    with structlog.testing.capture_logs() as logs:
        reads = asyncio.gather(*(client.get("organizations", organization) for _ in range(8)))
        await until(lambda: sent(pure_sim) == 5)
        await asyncio.sleep(0.1)  # the other three wait: none is sent, none fails
        assert sent(pure_sim) == 5
        assert not reads.done()
        assert telemetry.quotas["pure"] == (5, 0)
        clock.advance(3601)
        answers = await reads
    assert [answer["uuid"] for answer in answers] == [organization] * 8
    assert not pure_sim.throttled  # Pure never had to refuse one
    said = [e["event"] for e in logs if e["event"].startswith("pure.quota")]
    assert said == ["pure.quota_spent", "pure.quota_refilled"]
    assert telemetry.quotas["pure"] == (5, 2)


async def test_backfill_leaves_the_changes_their_share_of_the_quota(
    config: Config, pure_sim: PureSimulator, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(NOON)
    pure_sim.throttle(hourly_quota=10, clock=clock.monotonic)
    paced = limited(config, hourly_quota=10, changes_share=0.2)
    client, _ = paced_client(session, paced, clock)
    organization = pure_sim.organization_uuids[0]

    async def backfill_reads(count: int) -> None:
        backfill_work.set(True)  # in this task only, as the dispatcher sets it per worker
        for _ in range(count):
            await client.get("organizations", organization)

    await asyncio.create_task(backfill_reads(8))
    waits = client.pacing.backfill_waits()
    assert waits is not None
    assert waits.reason.startswith("backfill's part of the hourly quota is spent (8 of 10")
    assert not waits.outside_window
    more_backfill = asyncio.create_task(backfill_reads(1))
    # Changes still go: the two requests kept for them.
    for _ in range(2):
        await client.get("organizations", organization)
    assert sent(pure_sim) == 10
    assert client.pacing.spent()
    assert not more_backfill.done()
    clock.advance(3601)
    await more_backfill
    assert sent(pure_sim) == 11
    assert not pure_sim.throttled


async def test_requests_per_second_never_pass_pures_limit(
    config: Config, pure_sim: PureSimulator, session: aiohttp.ClientSession
) -> None:
    pure_sim.throttle(per_second=5)
    client, _ = paced_client(session, limited(config, rate_limit=5, concurrency=8))
    organization = pure_sim.organization_uuids[0]
    # A sixth request within the second of the first five: a leaky bucket lets it go.
    await asyncio.gather(*(client.get("organizations", organization) for _ in range(6)))
    assert sent(pure_sim) == 6
    assert not pure_sim.throttled


async def test_a_retry_after_is_honoured_up_to_the_cap_and_said_once_per_answer(
    config: Config, pure_sim: PureSimulator, session: aiohttp.ClientSession
) -> None:
    client, _ = paced_client(session, limited(config, retry_after_cap=0.1))
    organization = pure_sim.organization_uuids[0]
    pure_sim.fail_next(429, retry_after=3600)
    with structlog.testing.capture_logs() as logs:
        answer = await client.get("organizations", organization)
    assert answer["uuid"] == organization  # the second try, after 0.1 s, not an hour
    [capped] = [e for e in logs if e["event"] == "pure.retry_after_capped"]
    assert (capped["retry_after"], capped["waiting"], capped["status"]) == (3600, 0.1, 429)

    pure_sim.fail_next(503, count=3, retry_after=900)
    with pytest.raises(RetriableError) as failed:
        await client.get("organizations", organization)
    # What the dispatcher's retry waits for at least: the cap, not Pure's 900 s.
    assert failed.value.retry_after == 0.1


def test_a_backfill_window_may_span_midnight() -> None:
    nights = BackfillWindow.parse("22:00-06:00")
    assert [nights.contains(NOON.replace(hour=hour)) for hour in (21, 22, 23, 0, 5, 6)] == [
        False,
        True,
        True,
        True,
        True,
        False,
    ]
    lunch = BackfillWindow.parse("12:00-13:30")
    assert lunch.contains(NOON)
    assert not lunch.contains(NOON.replace(hour=13, minute=30))
    for wrong in ("22:00", "25:00-06:00", "06:00-06:00"):
        with pytest.raises(ValueError, match=r"HH:MM|empty"):
            BackfillWindow.parse(wrong)
