from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import aiohttp
import pytest
import structlog
from pydantic import SecretStr

from crisync.config.model import MetricsConfig
from crisync.handlers.base import ForeignStateError
from crisync.handlers.dispatcher import Dispatcher, DispatchSettings
from crisync.handlers.pure import client as pure_client
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.sim import PureSimulator
from crisync.handlers.pure.target import PureTarget
from crisync.handlers.routing import route
from crisync.lifecycle import Lifecycle
from crisync.metrics import serve_metrics
from crisync.sim.server import free_port
from crisync.state import api_circuits, dead_letters, inbox, mapping, outbox
from crisync.state.store import Store, utc_now
from crisync.systemd import status_line
from crisync.telemetry import Telemetry
from tests.support.events import enqueue, publication, user
from tests.support.wait import until


def dispatcher_for(
    context: PureContext,
    life: Lifecycle,
    *,
    max_attempts: int = 5,
    telemetry: Telemetry | None = None,
    park_duration: float = 300.0,
) -> Dispatcher:
    return Dispatcher(
        context.store,
        route(context.mappings, {"pure": PureTarget(context)}, []),
        DispatchSettings(
            workers=3,
            max_attempts=max_attempts,
            park_duration=park_duration,
            topic_prefix="t",
            refers_to=context.mappings.referred(),
        ),
        life=life,
        telemetry=telemetry or Telemetry(),
    )


async def drain(context: PureContext, *, max_attempts: int = 5) -> None:
    """Run the dispatcher as `crisync once` does: until nothing is pending."""
    life = Lifecycle()
    life.feeds_done.set()
    async with asyncio.timeout(30):
        await dispatcher_for(context, life, max_attempts=max_attempts).run()


async def test_a_refused_key_pauses_the_handlers_and_burns_no_attempt(
    context: PureContext, session: aiohttp.ClientSession
) -> None:
    await enqueue(context.store, *(publication(str(n), f"Title {n}") for n in range(5)))
    telemetry = Telemetry()
    wrong_key = context.pure_config.model_copy(update={"api_key": SecretStr("wrong")})
    refused = replace(context, pure=PureClient(session, wrong_key, telemetry=telemetry))
    life = Lifecycle()
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(dispatcher_for(refused, life).run())
        await asyncio.sleep(0.5)
        life.stopping.set()
        await running
    [rejected, *_] = [e for e in logs if e["event"] == "credentials.rejected"]
    assert (rejected["api"], rejected["status"], rejected["pause_seconds"]) == ("pure", 401, 300.0)
    # The refusal is Pure's state: its circuit opened at once and holds the work back.
    [opened] = [e for e in logs if e["event"] == "circuit.opened"]
    assert opened["reason"].startswith("refused the credentials (HTTP 401): ")
    assert opened["next_probe_in"] > 250  # the next try waits [pure] park_duration
    # Only the handlers already under way asked; no event was tried again.
    assert 1 <= sum(telemetry.requests.values()) <= 3
    async with context.store.reading() as conn:
        assert await dead_letters.count(conn) == 0
        pending = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=10)
        [said] = await api_circuits.describe_open(conn)
    assert [event.attempts for event in pending] == [0] * 5
    assert said.startswith("pure refused the credentials (HTTP 401): ")
    assert said.endswith(" UTC, 5 waiting")


async def outcomes(store: Store) -> list[dict[str, object]]:
    async with store.reading() as conn:
        return [json.loads(m.payload) for m in await outbox.oldest(conn, 1000)]


async def test_every_event_is_replicated_once_with_one_outcome_each(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store, *(publication(str(n), f"Title {n}") for n in range(10)), user("u1", "Hopper")
    )
    await drain(context)
    assert len(pure_sim.objects("research-outputs")) == 10
    assert len(pure_sim.objects("persons")) == 1
    published = await outcomes(context.store)
    assert sorted(o["key"] for o in published) == sorted([str(n) for n in range(10)] + ["u1"])
    assert {o["action"] for o in published} == {"created"}
    assert len({o["id"] for o in published}) == 11
    async with context.store.reading() as conn:
        assert await inbox.pending_count(conn) == 0
        assert await mapping.count(conn) == 11


async def test_events_of_one_key_coalesce_into_the_newest(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store,
        publication("1", "First"),
        publication("1", "Second", minute=1),
        publication("1", "Third", minute=2),
    )
    await drain(context)
    (stored,) = pure_sim.objects("research-outputs").values()
    assert stored["title"] == {"value": "Third"}
    assert pure_sim.request_counts[("research-outputs", "create")] == 1
    assert len(await outcomes(context.store)) == 1


async def test_a_publication_waits_for_its_authors_users_to_be_replicated(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    """Run alongside its author's user, a publication would name an external person instead
    of the person being created."""
    names = ["Hopper", "Lovelace", "Turing", "Noether", "Curie", "Meitner"]
    await enqueue(
        context.store,
        *(user(f"u{n}", name, first_name="Ada") for n, name in enumerate(names)),
        *(
            publication(str(n), f"Title {n}", authors=[(names[-1], "A")], related=["u5"])
            for n in range(6)
        ),
    )
    await drain(context)
    assert pure_sim.objects("external-persons") == {}
    (author,) = (
        uuid
        for uuid, person in pure_sim.objects("persons").items()
        if person["name"]["lastName"] == names[-1]
    )
    for research_output in pure_sim.objects("research-outputs").values():
        assert [c["person"]["uuid"] for c in research_output["contributors"]] == [author]


async def test_a_retriable_failure_is_retried_and_succeeds(
    context: PureContext, pure_sim: PureSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crisync.handlers.dispatcher.full_jitter", lambda *a, **k: 0.05)
    monkeypatch.setattr(pure_client, "REQUEST_ATTEMPTS", 1)  # each failure ends an attempt
    pure_sim.fail_next(503, count=2, operation="create")
    await enqueue(context.store, publication("1", "Title"))
    await drain(context)
    (outcome,) = await outcomes(context.store)
    assert outcome["action"] == "created"
    assert outcome["attempts"] == 3
    assert len(pure_sim.objects("research-outputs")) == 1


async def test_a_permanent_failure_is_a_dead_letter_and_does_not_block_others(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("bad", ""), publication("good", "Fine"))
    await drain(context)
    by_key = {o["key"]: o for o in await outcomes(context.store)}
    assert by_key["good"]["action"] == "created"
    assert by_key["bad"]["action"] == "failed"
    error = by_key["bad"]["error"]
    assert isinstance(error, dict)
    assert error["class"] == "PermanentError"
    assert "no value for title.value" in error["message"]
    async with context.store.reading() as conn:
        (letter,) = await dead_letters.all_dead_letters(conn)
        assert await inbox.pending_count(conn) == 0
    assert letter.key == "bad"
    assert len(pure_sim.objects("research-outputs")) == 1


async def test_retriable_failures_that_never_end_become_dead_letters(
    context: PureContext, pure_sim: PureSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crisync.handlers.dispatcher.full_jitter", lambda *a, **k: 0.01)
    monkeypatch.setattr(pure_client, "REQUEST_ATTEMPTS", 1)  # each failure ends an attempt
    pure_sim.fail_next(500, count=10, operation="create")
    await enqueue(context.store, publication("1", "Title"))
    await drain(context, max_attempts=3)
    (outcome,) = await outcomes(context.store)
    assert outcome["action"] == "failed"
    assert outcome["attempts"] == 3


async def test_a_placeholder_organisation_stops_pure_s_work_with_its_one_message_everywhere(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    placeholder = "00000000-0000-0000-0000-000000000000"
    wrong = context.pure_config.model_copy(update={"managing_organization": placeholder})
    misconfigured = replace(context, pure_config=wrong)
    await enqueue(context.store, *(publication(str(n), f"Title {n}") for n in range(30)))
    telemetry, life = Telemetry(), Lifecycle()  # the daemon: its feeds are never done
    dispatcher = dispatcher_for(misconfigured, life, telemetry=telemetry)
    async with (
        serve_metrics(MetricsConfig(port=free_port()), context.store, telemetry) as metrics,
        asyncio.TaskGroup() as group,
    ):
        group.create_task(dispatcher.run())
        await until(lambda: telemetry.unavailable() != [], within=10)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{metrics}/healthz") as health:
                assert health.status == 503
                assert f"no Organization with uuid {placeholder}" in await health.text()
            async with http.get(f"{metrics}/metrics") as scrape:
                assert 'crisync_api_available{api="pure"} 0.0' in await scrape.text()
        life.stopping.set()
        life.work_ready.set()

    line = await status_line(context.store, [], stopping=False)
    assert line.startswith("pure refused the configuration: 10 of the first ")
    async with context.store.reading() as conn:
        assert await dead_letters.count(conn) == 0
        waiting = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=100)
    assert [event.attempts for event in waiting] == [0] * 30
    assert pure_sim.objects("research-outputs") == {}
    [state] = [json.loads(m) for m in await retained(context.store, "t/apis/pure")]
    assert (state["available"], state["waiting"]) == (False, 30)
    assert state["reason"].startswith("refused the configuration: ")


async def test_a_refusal_of_the_configuration_ends_when_its_probe_is_answered(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    """The probe is an object of the refused kind; the same failure keeps the circuit open,
    and once Pure takes it (the missing content was created, say) all of them flow."""
    create = {"content_type": "research-outputs", "operation": "create"}
    pure_sim.fail_next(400, count=1000, **create)
    await enqueue(context.store, *(publication(str(n), f"Title {n}") for n in range(20)))
    life = Lifecycle()
    with structlog.testing.capture_logs() as logs:
        async with asyncio.TaskGroup() as group:
            group.create_task(dispatcher_for(context, life, park_duration=0.5).run())
            await until(lambda: "circuit.opened" in [e["event"] for e in logs], within=5)
            await asyncio.sleep(0.2)  # the creates under way when it opened are answered
            pure_sim.cancel_failures()
            pure_sim.fail_next(400, count=2, **create)  # two probes more meet it
            await until(lambda: len(pure_sim.objects("research-outputs")) == 20, within=10)
            await until(lambda: "circuit.closed" in [e["event"] for e in logs], within=5)
            life.stopping.set()
            life.work_ready.set()
    events = [e["event"] for e in logs]
    assert events.count("circuit.opened") == 1
    assert events.count("circuit.probe_failed") == 2  # the two it met
    assert "object.failed" not in events
    async with context.store.reading() as conn:
        assert await dead_letters.count(conn) == 0


async def retained(store: Store, topic: str) -> list[str]:
    async with store.reading() as conn:
        return [m.payload for m in await outbox.oldest(conn, 1000) if m.topic == topic]


async def test_the_state_is_checked_before_the_first_write_and_waits_out_an_outage(
    context: PureContext, pure_sim: PureSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is the first request to Pure: it fails as an object's would (an attempt,
    the circuit), and once it answers it is not asked again."""
    monkeypatch.setattr("crisync.handlers.dispatcher.full_jitter", lambda *a, **k: 0.05)
    monkeypatch.setattr(pure_client, "REQUEST_ATTEMPTS", 1)  # each failure ends an attempt
    pure_sim.fail_next(503, operation="search")
    await enqueue(context.store, publication("1", "Title"), publication("2", "Other"))
    await drain(context)
    assert sorted(o["attempts"] for o in await outcomes(context.store)) == [1, 2]
    assert pure_sim.request_counts[("research-outputs", "create")] == 2
    # Its types in order: awards failed first, then every type answered, once for both.
    assert pure_sim.request_counts[("awards", "search")] == 2
    assert pure_sim.request_counts[("persons", "search")] == 1


async def test_pure_holding_crisync_s_content_that_the_state_does_not_know_stops_the_dispatcher(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, publication("1", "Title"))
    await drain(context)
    async with context.store.transaction() as conn:
        await conn.execute("DELETE FROM mapping")  # the state database lost
    await enqueue(context.store, publication("2", "Another", minute=1))
    with pytest.raises(ExceptionGroup) as stopped:
        await drain(context)
    assert stopped.group_contains(ForeignStateError, match=r"e\.g\. elements:publication:1 as ")
    assert len(pure_sim.objects("research-outputs")) == 1
    async with context.store.reading() as conn:
        assert await inbox.pending_count(conn) == 1  # it waits for `crisync reconcile`


async def test_circuits_a_stopped_run_left_open_are_closed_by_the_next_start(
    context: PureContext,
) -> None:
    async with context.store.transaction() as conn:
        for api in ("pure", "elements"):  # elements: its write-back since switched off
            left_open = api_circuits.OpenCircuit(
                api, "2026-12-05T13:40:02+00:00", f"{api}: connection failed", [], 3, None
            )
            await api_circuits.put(conn, left_open)
    assert (await status_line(context.store, [], stopping=False)).startswith("elements unreach")

    await drain(context)

    async with context.store.reading() as conn:
        assert await api_circuits.all_open(conn) == []
    assert (await status_line(context.store, [], stopping=False)).startswith("backlog 0")
    [pure] = [json.loads(m) for m in await retained(context.store, "t/apis/pure")]
    assert (pure["available"], pure["since"]) == (True, None)
    assert await retained(context.store, "t/apis/elements") == [""]  # removed from the broker
