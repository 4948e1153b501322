"""An outage is a state of the API: work waits with its attempts, and says so everywhere."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import structlog
from jsonschema import Draft202012Validator

from crisync.config.model import Config, MetricsConfig
from crisync.errors import CredentialError, PermanentError, RetriableError, UnreachableError
from crisync.handlers import circuit as circuit_module
from crisync.handlers.circuit import Circuit, Opened, ProbeFailed, outage_failure
from crisync.handlers.dispatcher import Dispatcher, DispatchSettings
from crisync.handlers.pure import client as pure_client
from crisync.handlers.pure.client import PureClient, PureConflictError
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.sim import PureSimulator
from crisync.handlers.pure.target import PureTarget
from crisync.handlers.routing import route
from crisync.lifecycle import Lifecycle
from crisync.metrics import serve_metrics
from crisync.schemas import load_schema
from crisync.sim.server import free_port, serve
from crisync.state import api_circuits, dead_letters, inbox, outbox
from crisync.state.inbox import InboxEvent
from crisync.state.store import Store
from crisync.systemd import status_line
from crisync.telemetry import Telemetry
from tests.support.events import enqueue, publication, user
from tests.support.wait import until


def event(key: str, attempts: int = 0) -> InboxEvent:
    return InboxEvent(
        int(key), "f", "elements", "publication", key, "upsert", "t", "t", {}, attempts
    )


def server_error(status: int = 503) -> RetriableError:
    return RetriableError("HTTP 503", api="pure", status=status)


def test_which_failures_are_the_apis() -> None:
    assert outage_failure(UnreachableError("connection failed", api="pure"))
    assert outage_failure(RetriableError("request timed out", api="pure"))
    assert all(outage_failure(server_error(status)) for status in (500, 502, 503, 504))
    assert not outage_failure(PureConflictError("stale", api="pure", status=409))
    assert not outage_failure(RetriableError("throttled", api="pure", status=429))
    assert not outage_failure(PermanentError("bad request", api="pure", status=400))


def test_server_errors_of_one_object_are_its_own_but_of_two_open_the_circuit() -> None:
    one = Circuit("pure", frozenset({"elements/publication"}), refusal_pause=300.0)
    assert [one.failed(event("1", n), server_error()) for n in range(8)] == [False] * 8
    assert not one.is_open

    two = Circuit("pure", frozenset({"elements/publication"}), refusal_pause=300.0)
    verdicts = [two.failed(event(str(n % 2 + 1), n // 2), server_error()) for n in range(5)]
    assert verdicts[:4] == [False] * 4
    opened = verdicts[4]
    assert isinstance(opened, Opened)
    # Each event goes back to the attempts it had when the streak first met it.
    assert sorted((e.key, e.attempts) for e in opened.given_back) == [("1", 0), ("2", 0)]
    assert two.is_open
    assert two.failed(event("3"), server_error()) is True  # held: it waits, untried


def test_an_answer_between_failures_ends_the_streak_and_closes_the_circuit() -> None:
    circuit = Circuit("pure", frozenset({"elements/publication"}), refusal_pause=300.0)
    for n in range(4):
        assert circuit.failed(event(str(n)), server_error()) is False
    assert circuit.answered() is None  # a success, or a 400: the API answers
    for n in range(4):
        assert circuit.failed(event(str(n)), server_error()) is False
    assert isinstance(circuit.failed(event("9"), server_error()), Opened)
    closed = circuit.answered()
    assert closed is not None
    assert closed.open_for >= 0
    assert not circuit.is_open


def test_one_object_that_cannot_even_connect_opens_it() -> None:
    circuit = Circuit("pure", frozenset({"elements/publication"}), refusal_pause=300.0)
    unreachable = UnreachableError("connection failed: refused", api="pure")
    verdicts = [circuit.failed(event("1", n), unreachable) for n in range(5)]
    assert verdicts[:4] == [False] * 4
    assert isinstance(verdicts[4], Opened)


def test_a_refused_key_is_told_apart_from_an_outage_until_the_api_answers() -> None:
    """What `once` gives up on at once (a key is not mended during a run) and what it waits
    for (an outage)."""
    refused = CredentialError("HTTP 401: Unauthorized", api="pure", status=401)
    unreachable = UnreachableError("connection failed: refused", api="pure")
    circuit = Circuit("pure", frozenset({"elements/publication"}), refusal_pause=300.0)
    assert isinstance(circuit.failed(event("1"), refused), Opened)  # at once
    assert circuit.credentials_refused
    assert circuit.answered() is not None
    assert not circuit.credentials_refused

    for n in range(5):
        circuit.failed(event("1", n), unreachable)
    assert circuit.is_open
    assert not circuit.credentials_refused
    circuit.probing(event("1"))
    # The API is back, with the key changed meanwhile.
    assert isinstance(circuit.failed(event("1"), refused), ProbeFailed)
    assert circuit.credentials_refused


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes, replays and object retries in tens of milliseconds, not seconds."""
    monkeypatch.setattr(circuit_module, "PROBE_BASE", 0.05)
    monkeypatch.setattr(circuit_module, "PROBE_CAP", 0.2)
    monkeypatch.setattr(pure_client, "REQUEST_BACKOFF_BASE", 0.01)
    monkeypatch.setattr(pure_client, "REQUEST_BACKOFF_CAP", 0.02)
    monkeypatch.setattr("crisync.handlers.dispatcher.full_jitter", lambda *a, **k: 0.05)


def dispatcher(
    context: PureContext,
    life: Lifecycle,
    telemetry: Telemetry,
    *,
    max_attempts: int = 3,
    refers_to: dict[tuple[str, str], frozenset[str]] | None = None,
) -> Dispatcher:
    return Dispatcher(
        context.store,
        route(context.mappings, {"pure": PureTarget(context)}, []),
        DispatchSettings(
            workers=3,
            max_attempts=max_attempts,
            park_duration=300.0,
            topic_prefix="t",
            refers_to=context.mappings.referred() if refers_to is None else refers_to,
        ),
        life=life,
        telemetry=telemetry,
    )


@asynccontextmanager
async def running(
    context: PureContext, telemetry: Telemetry, **settings: Any
) -> AsyncIterator[Lifecycle]:
    """The dispatcher as the daemon runs it (feeds never done) until the block ends."""
    life = Lifecycle()
    async with asyncio.TaskGroup() as group:
        group.create_task(dispatcher(context, life, telemetry, **settings).run())
        try:
            yield life
        finally:
            life.stopping.set()
            life.work_ready.set()


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def named(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def pending(store: Store) -> list[InboxEvent]:
    async with store.reading() as conn:
        return await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)


async def published(store: Store, topic_part: str) -> list[dict[str, Any]]:
    """The payloads of the queued MQTT messages whose topic has `topic_part`, oldest first."""
    async with store.reading() as conn:
        messages = await outbox.oldest(conn, 1000)
    return [json.loads(m.payload) for m in messages if topic_part in m.topic]


async def outcomes(store: Store) -> list[dict[str, Any]]:
    return await published(store, "/outcomes/")


async def http_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


@pytest.mark.usefixtures("fast_retries")
async def test_pure_out_of_reach_holds_the_work_with_its_attempts_until_it_is_back(
    config: Config,
    store: Store,
    session: aiohttp.ClientSession,
    pure_sim: PureSimulator,
    logs: list[MutableMapping[str, Any]],
) -> None:
    assert config.pure is not None
    port = free_port()  # nothing listens there until Pure comes back
    pure_config = config.pure.model_copy(update={"url": f"http://127.0.0.1:{port}/ws/api"})
    telemetry = Telemetry()
    client = PureClient(session, pure_config, telemetry=telemetry)
    context = PureContext(store, client, pure_config, config.mappings)
    await enqueue(store, *(publication(str(n), f"Title {n}") for n in range(12)))

    async with (
        running(context, telemetry),
        serve_metrics(MetricsConfig(port=free_port()), store, telemetry) as metrics,
    ):
        await until(lambda: named(logs, "circuit.probe_failed"), within=10)
        waiting = await pending(store)
        assert [e.attempts for e in waiting] == [0] * 12
        async with store.reading() as conn:
            assert await dead_letters.count(conn) == 0
            (line,) = await api_circuits.describe_open(conn)
        assert line.startswith("pure unreachable since ")
        assert line.endswith(" UTC, 12 waiting")
        assert (await status_line(store, [], stopping=False)).startswith(line)
        status, body = await http_get(f"{metrics}/healthz")
        assert status == 503
        assert json.loads(body)["status"] == "unavailable"
        assert "pure: since " in body
        assert "connection failed" in body
        assert 'crisync_api_available{api="pure"} 0.0' in (await http_get(f"{metrics}/metrics"))[1]

        async with serve(pure_sim.app(), port=port):
            await until(lambda: len(pure_sim.objects("research-outputs")) == 12, within=10)
            await until(lambda: outcomes_count(store, 12), within=10)
        assert (await http_get(f"{metrics}/healthz"))[0] == 200
        assert 'crisync_api_available{api="pure"} 1.0' in (await http_get(f"{metrics}/metrics"))[1]

    (opened,) = named(logs, "circuit.opened")
    assert opened["log_level"] == "error"
    assert opened["api"] == "pure"
    assert "connection failed" in opened["reason"]
    assert {entry["log_level"] for entry in named(logs, "circuit.probe_failed")} == {"warning"}
    (closed,) = named(logs, "circuit.closed")
    assert closed["open_for"] > 0
    assert closed["waiting"] == 12
    assert named(logs, "object.failed") == []
    replicated = await outcomes(store)
    assert {o["action"] for o in replicated} == {"created"}
    assert {o["attempts"] for o in replicated} == {1}  # no try was lost to the outage
    async with store.reading() as conn:
        assert await api_circuits.all_open(conn) == []
    # Subscribers were told too, retained, in the state's own schema.
    states = await published(store, "t/apis/pure")
    schema = Draft202012Validator(load_schema("api"))
    assert [list(schema.iter_errors(state)) for state in states] == [[]] * len(states)
    assert (states[0]["available"], states[0]["waiting"]) == (False, 12)
    assert "connection failed" in states[0]["reason"]
    assert (states[-1]["available"], states[-1]["since"]) == (True, None)
    assert states[-1]["waiting"] == closed["waiting"]


async def outcomes_count(store: Store, expected: int) -> bool:
    return len(await outcomes(store)) == expected


@pytest.mark.usefixtures("fast_retries")
async def test_pure_answering_503_to_everything_burns_no_attempt_and_no_object(
    context: PureContext, pure_sim: PureSimulator, logs: list[MutableMapping[str, Any]]
) -> None:
    pure_sim.storm(1.0, statuses=(503,))
    await enqueue(context.store, *(publication(str(n), f"Title {n}") for n in range(30)))
    telemetry = Telemetry()
    async with running(context, telemetry):
        await until(lambda: len(named(logs, "circuit.probe_failed")) >= 3, within=10)
        assert telemetry.unavailable() == [f"pure: {telemetry.api_outages['pure']}"]
        assert [e.attempts for e in await pending(context.store)] == [0] * 30
        pure_sim.storm(0)
        await until(lambda: outcomes_count(context.store, 30), within=10)

    assert len(named(logs, "circuit.opened")) == 1
    assert named(logs, "object.failed") == []
    assert {o["action"] for o in await outcomes(context.store)} == {"created"}
    assert telemetry.unavailable() == []
    # One probe at a time: a handful of requests per probe, never one per waiting object.
    # The streak that opened it, then one probe at a time: never a try per waiting object.
    assert len(named(logs, "handler.retry_later")) < circuit_module.OPEN_AFTER
    tries = circuit_module.OPEN_AFTER + 3 + len(named(logs, "circuit.probe_failed"))  # 3 workers
    # A create replays its search-and-create, whose requests replay themselves.
    assert pure_sim.storm_failures["503"] <= tries * pure_client.REQUEST_ATTEMPTS**2


@pytest.mark.usefixtures("fast_retries")
async def test_one_objects_failures_while_the_others_succeed_still_end_in_a_dead_letter(
    context: PureContext, pure_sim: PureSimulator, logs: list[MutableMapping[str, Any]]
) -> None:
    pure_sim.fail_next(500, count=1000, content_type="research-outputs", operation="create")
    users = [user(f"u{n}", f"Name{n}") for n in range(20)]
    await enqueue(context.store, publication("1", "Title"), *users)
    life = Lifecycle()
    life.feeds_done.set()
    # Publications need not wait for users here: the failures and the successes interleave.
    run = dispatcher(context, life, Telemetry(), max_attempts=3, refers_to={})
    async with asyncio.timeout(30):
        await run.run()

    assert named(logs, "circuit.opened") == []
    by_key = {o["key"]: o for o in await outcomes(context.store)}
    assert (by_key["1"]["action"], by_key["1"]["attempts"]) == ("failed", 3)
    assert len(pure_sim.objects("persons")) == 20
    async with context.store.reading() as conn:
        (letter,) = await dead_letters.all_dead_letters(conn)
    assert (letter.key, letter.status) == ("1", 500)
