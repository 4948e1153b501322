from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crisync.config.model import MetricsConfig
from crisync.errors import ErrorInfo
from crisync.metrics import MetricsUnavailableError, serve_metrics
from crisync.sim.server import free_port
from crisync.state import cursors, dead_letters, inbox, outbox
from crisync.state.cursors import Cursor
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.docs import first_column
from tests.support.events import claim_one, enqueue, publication, user
from tests.support.metrics import crisync_families


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_export_the_counters_and_what_the_state_says(store: Store) -> None:
    telemetry = Telemetry()
    telemetry.received("elements:users", 5)
    for action in ("created", "created", "updated", "failed"):
        telemetry.outcome(action)
    telemetry.request("pure", "PUT", 201, 0.03)
    telemetry.request("pure", "PUT", 201, 0.7)
    telemetry.request("elements", "GET", "TimeoutError", 60.0)
    telemetry.expect("dispatcher", 120)
    telemetry.quota("pure", 1000, 250)
    telemetry.backfill_waits = "outside the backfill window 22:00-06:00 (local time)"
    async with store.transaction() as conn:
        high_water = datetime.now(UTC) - timedelta(seconds=90)
        await cursors.save(conn, Cursor("elements:users", high_water=high_water))
        await cursors.save(conn, Cursor("elements:publications"))
        await outbox.add(conn, "crisync/outcomes/elements/user/1", "{}")
    await enqueue(store, user("1", "Lovelace"), user("2", "Hopper"), publication("3", "Paper"))
    failed = await claim_one(store)
    async with store.transaction() as conn:
        await inbox.complete(conn, failed, state="dead")
        await dead_letters.add(conn, failed, ErrorInfo("PermanentError", 400, "pure: bad"), 1)

    async with serve_metrics(MetricsConfig(port=free_port()), store, telemetry) as url:
        status, text = await get(f"{url}/metrics")
    assert status == 200
    found = samples(text)
    assert found[("crisync_events_received_total", (("feed", "elements:users"),))] == 5
    assert found[("crisync_outcomes_total", (("action", "created"),))] == 2
    assert found[("crisync_outcomes_total", (("action", "failed"),))] == 1
    pure_201 = (("api", "pure"), ("status", "201"))
    assert (
        found[("crisync_api_requests_total", (*pure_201[:1], ("method", "PUT"), pure_201[1]))] == 2
    )
    assert found[("crisync_api_request_duration_seconds_count", pure_201)] == 2
    assert (
        found[
            (
                "crisync_api_request_duration_seconds_bucket",
                (*pure_201[:1], ("le", "0.05"), pure_201[1]),
            )
        ]
        == 1
    )
    assert (
        found[
            (
                "crisync_api_request_duration_seconds_bucket",
                (*pure_201[:1], ("le", "1.0"), pure_201[1]),
            )
        ]
        == 2
    )
    assert found[("crisync_api_request_duration_seconds_sum", pure_201)] == pytest.approx(0.73)
    assert (
        found[
            (
                "crisync_api_requests_total",
                (("api", "elements"), ("method", "GET"), ("status", "TimeoutError")),
            )
        ]
        == 1
    )
    # One of the two user events became a dead letter; the publication waits too.
    assert found[("crisync_backlog_events", (("feed", "elements:users"),))] == 1
    assert found[("crisync_backlog_events", (("feed", "elements:publications"),))] == 1
    assert found[("crisync_outbox_messages", ())] == 1
    assert found[("crisync_dead_letters", ())] == 1
    assert found[("crisync_api_quota_limit", (("api", "pure"),))] == 1000
    assert found[("crisync_api_quota_remaining", (("api", "pure"),))] == 250
    assert found[("crisync_backfill_held", ())] == 1
    assert found[("crisync_backfill_events", ())] == 0  # the events enqueued are changes
    assert 90 <= found[("crisync_cursor_lag_seconds", (("feed", "elements:users"),))] < 100
    assert ("crisync_cursor_lag_seconds", (("feed", "elements:publications"),)) not in found
    assert found[("crisync_loop_seconds_since_progress", (("loop", "dispatcher"),))] < 10
    assert ("process_open_fds", ()) in found
    assert found[("crisync_asyncio_tasks", ())] >= 1  # the scrape's own task at least


async def test_healthz_is_503_with_the_reason_while_a_loop_makes_no_progress(store: Store) -> None:
    telemetry = Telemetry()
    telemetry.expect("dispatcher", 120)
    telemetry.expect("publisher", 120)
    async with serve_metrics(MetricsConfig(port=free_port()), store, telemetry) as url:
        assert await get(f"{url}/healthz") == (
            200,
            '{"status": "ok", "stalled": [], "unavailable": []}',
        )
        telemetry.loops["dispatcher"].last_beat -= 300
        status, body = await get(f"{url}/healthz")
        assert status == 503
        assert "dispatcher silent for 300s (deadline 120s)" in body
        telemetry.beat("dispatcher")
        assert (await get(f"{url}/healthz"))[0] == 200


async def test_a_port_already_taken_is_a_clear_error(store: Store) -> None:
    config = MetricsConfig(port=free_port())
    async with serve_metrics(config, store, Telemetry()):
        with pytest.raises(MetricsUnavailableError, match=f"127.0.0.1:{config.port}"):
            async with serve_metrics(config, store, Telemetry()):
                pass


def test_the_table_of_metrics_lists_every_family_exported_and_no_other() -> None:
    """A counter as its samples are named (`_total`), a histogram by its family's name."""
    exported = {
        name + ("_total" if kind == "counter" else "") for name, kind in crisync_families().items()
    }
    assert "crisync_api_available" in exported
    listed = {name for name in first_column("metric") if name.startswith("crisync_")}
    assert (sorted(exported - listed), sorted(listed - exported)) == ([], [])
