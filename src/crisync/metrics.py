"""The HTTP endpoint for monitors: /healthz (is every loop making progress, does every API
answer) and /metrics.

/metrics is the Prometheus exposition of the Telemetry counters, with the backlog, the
outbox depth, the dead letters and the cursor lag read from the state database at each
scrape. Every daemon has a registry of its own; nothing lives in a module global.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from crisync.config.model import MetricsConfig
from crisync.state import cursors, dead_letters, inbox, outbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.metrics")


class MetricsUnavailableError(Exception):
    """The endpoint could not listen where the configuration says."""


class TelemetryCollector:
    """What the loops counted, as Prometheus metric families."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        t = self._telemetry
        events = CounterMetricFamily(
            "crisync_events_received",
            "Change events a feed added to the inbox (repeats left out)",
            labels=["feed"],
        )
        for feed, count in sorted(t.events_received.items()):
            events.add_metric([feed], count)
        yield events
        outcomes = CounterMetricFamily(
            "crisync_outcomes", "Replicated changes by outcome", labels=["action"]
        )
        for action, count in sorted(t.outcomes.items()):
            outcomes.add_metric([action], count)
        yield outcomes
        requests = CounterMetricFamily(
            "crisync_api_requests",
            "Requests to the APIs by answer (an HTTP status or the failure's name)",
            labels=["api", "method", "status"],
        )
        for labels, count in sorted(t.requests.items()):
            requests.add_metric(list(labels), count)
        yield requests
        latency = HistogramMetricFamily(
            "crisync_api_request_duration_seconds",
            "How long requests to the APIs took, by answer",
            labels=["api", "status"],
        )
        for (api, status), histogram in sorted(t.request_latency.items()):
            latency.add_metric(
                [api, status],
                [(_bound(bound), n) for bound, n in histogram.cumulative()],
                histogram.total,
            )
        yield latency
        silence = GaugeMetricFamily(
            "crisync_loop_seconds_since_progress",
            "Seconds since each loop last made progress",
            labels=["loop"],
        )
        now = time.monotonic()
        for name, progress in sorted(t.loops.items()):
            silence.add_metric([name], now - progress.last_beat)
        yield silence
        available = GaugeMetricFamily(
            "crisync_api_available",
            "1 while an API answers, 0 while its outage circuit is open (mqtt: the broker)",
            labels=["api"],
        )
        for api, answers in sorted(t.availability().items()):
            available.add_metric([api], 1 if answers else 0)
        yield available
        limit = GaugeMetricFamily(
            "crisync_api_quota_limit",
            "Requests an API allows crisync in any rolling hour ([pure] hourly_quota)",
            labels=["api"],
        )
        remaining = GaugeMetricFamily(
            "crisync_api_quota_remaining",
            "Requests of the hourly quota left: the quota less those sent in the last hour",
            labels=["api"],
        )
        for api, (allowed, left) in sorted(t.quotas.items()):
            limit.add_metric([api], allowed)
            remaining.add_metric([api], left)
        yield limit
        yield remaining
        yield GaugeMetricFamily(
            "crisync_backfill_held",
            "1 while backfill work waits (outside its window, or its share of the quota spent)",
            value=0 if t.backfill_waits is None else 1,
        )


def _bound(seconds: float) -> str:
    return "+Inf" if math.isinf(seconds) else str(seconds)


@dataclass(frozen=True)
class StateFigures:
    """What the state database says at one moment."""

    backlog: dict[str, int]  # feed → pending events
    outbox_depth: int
    dead_letters: int
    cursor_lag: dict[str, float]  # feed → seconds since its high-water mark
    credentials_refused: dict[str, bool]  # feed → whether its API refused them at its last poll
    backfill: int  # pending backfill events

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "crisync_backlog_events", "Changes waiting to be replicated", labels=["feed"]
        )
        for feed, count in sorted(self.backlog.items()):
            backlog.add_metric([feed], count)
        yield backlog
        yield GaugeMetricFamily(
            "crisync_outbox_messages",
            "MQTT messages waiting for the broker's acknowledgement",
            value=self.outbox_depth,
        )
        yield GaugeMetricFamily(
            "crisync_dead_letters",
            "Changes that failed for good and wait for a retry",
            value=self.dead_letters,
        )
        lag = GaugeMetricFamily(
            "crisync_cursor_lag_seconds",
            "Seconds between now and each feed's high-water mark",
            labels=["feed"],
        )
        for feed, seconds in sorted(self.cursor_lag.items()):
            lag.add_metric([feed], seconds)
        yield lag
        yield GaugeMetricFamily(
            "crisync_backfill_events",
            "Backfill events (a first pass, a re-read, resync --all) waiting to be replicated",
            value=self.backfill,
        )
        refused = GaugeMetricFamily(
            "crisync_feed_credentials_refused",
            "1 while a feed is parked because its API refused the credentials, else 0",
            labels=["feed"],
        )
        for feed, parked in sorted(self.credentials_refused.items()):
            refused.add_metric([feed], 1 if parked else 0)
        yield refused


async def read_figures(store: Store) -> StateFigures:
    now = datetime.now(UTC)
    async with store.reading() as conn:
        feeds = await cursors.all_cursors(conn)
        pending = await inbox.pending_by_feed(conn)
        depth = await outbox.depth(conn)
        letters = await dead_letters.count(conn)
        backfill = await inbox.pending_count(conn, backfill=True)
    return StateFigures(
        backlog={cursor.feed: 0 for cursor in feeds} | pending,
        outbox_depth=depth,
        dead_letters=letters,
        cursor_lag={
            cursor.feed: (now - cursor.high_water).total_seconds()
            for cursor in feeds
            if cursor.high_water is not None
        },
        credentials_refused={cursor.feed: cursor.parked_until is not None for cursor in feeds},
        backfill=backfill,
    )


@dataclass(frozen=True)
class LoopFigures:
    """The daemon's event loop at one moment."""

    tasks: int  # alive, the scrape's own included

    def collect(self) -> Iterator[Metric]:
        # A loop that starts tasks without ending them shows as a climb here.
        yield GaugeMetricFamily(
            "crisync_asyncio_tasks",
            "Tasks alive on the daemon's event loop, this scrape's own included",
            value=self.tasks,
        )


@dataclass(frozen=True)
class _Scrape:
    """The daemon's registry and this scrape's figures, as one collector."""

    registry: CollectorRegistry
    figures: StateFigures
    loop: LoopFigures

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.figures.collect()
        yield from self.loop.collect()


def metrics_app(store: Store, telemetry: Telemetry) -> web.Application:
    registry = CollectorRegistry()
    registry.register(TelemetryCollector(telemetry))
    # The standard process figures: memory, CPU, open files, Python version, GC.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

    async def healthz(_request: web.Request) -> web.Response:
        stalled = telemetry.stalled()
        async with store.reading() as conn:
            # A feed's refused credentials are in its cursor: the feed loops keep no more.
            unavailable = telemetry.unavailable() + await cursors.describe_parked(conn)
        status = "stalled" if stalled else "unavailable" if unavailable else "ok"
        return web.json_response(
            {"status": status, "stalled": stalled, "unavailable": unavailable},
            status=200 if status == "ok" else 503,
        )

    async def metrics(request: web.Request) -> web.Response:
        figures = await read_figures(store)
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        scrape = _Scrape(registry, figures, LoopFigures(tasks=len(asyncio.all_tasks())))
        return web.Response(body=encode(scrape), headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serve_metrics(
    config: MetricsConfig, store: Store, telemetry: Telemetry
) -> AsyncIterator[str]:
    """Serve /healthz and /metrics while the block runs; yields the base URL."""
    runner = web.AppRunner(metrics_app(store, telemetry), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            raise MetricsUnavailableError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror}"
            ) from exc
        url = f"http://{config.host}:{config.port}"
        log.info("metrics.listening", url=url)
        yield url
    finally:
        await runner.cleanup()
