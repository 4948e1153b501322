"""Resync of an Elements object: fetched again and replicated, repairing what Pure drifted to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crisync.cli import EX_NOINPUT, EX_USAGE, main
from crisync.config.model import Config
from crisync.daemon import http_session, resync_event, run_daemon
from crisync.errors import PermanentError
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.sim import PureSimulator
from crisync.lifecycle import Lifecycle
from crisync.listener.base import Source, SourceContext, queue_resync
from crisync.listener.elements.sim import ElementsSimulator
from crisync.listener.elements.source import ElementsSource
from crisync.sim.broker import MosquittoBroker
from crisync.state import inbox, mapping
from crisync.state.inbox import ChangeEvent
from crisync.state.store import Store, utc_now
from crisync.telemetry import Telemetry
from tests.support.config_file import write_config
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY


@pytest.fixture
async def elements(config: Config, store: Store) -> AsyncIterator[ElementsSource]:
    assert config.elements is not None
    async with http_session() as session:
        context = SourceContext(store, session, Lifecycle(), Telemetry())
        yield ElementsSource(config.elements, context)


async def resync(store: Store, source: Source, kind: str, key: str) -> ChangeEvent:
    event = await source.resync(kind, key)
    await queue_resync(store, event)
    return event


async def pure_uuid(config: Config, key: str) -> str:
    async with Store.open(config.state.path) as store, store.reading() as conn:
        row = await mapping.get(conn, "elements", "publication", key)
    assert row is not None
    return row.target_uuid


async def test_resync_writes_and_locks_again_what_was_edited_in_pure(
    config: Config,
    store: Store,
    elements: ElementsSource,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
) -> None:
    await run_daemon(config, once=True)
    key = str(elements_sim.object_ids("publication")[0])
    uuid = await pure_uuid(config, key)
    pure_sim.edit("research-outputs", uuid, {"title": {"value": "Edited in Pure"}})
    assert config.pure is not None
    async with http_session() as session:  # an editor unlocked it, too
        pure = PureClient(session, config.pure, telemetry=Telemetry())
        await pure.unlock("research-outputs", uuid)

    event = await resync(store, elements, "publication", key)
    again = await resync(store, elements, "publication", key)
    async with store.reading() as conn:
        assert await inbox.pending_count(conn) == 2  # a repeat is queued, not dropped
    assert event.payload["fields"]["title"] == elements_sim.title_of(int(key))

    pure_sim.request_counts.clear()
    await run_daemon(config, once=True)
    stored = pure_sim.objects("research-outputs")[uuid]
    assert stored["title"] == {"value": elements_sim.title_of(int(key))}
    assert pure_sim.is_locked("research-outputs", uuid)
    assert again.changed_at == event.changed_at
    # Read, write, lock: the two queued events coalesce into one replication.
    assert pure_sim.request_counts == {
        ("research-outputs", "get"): 1,
        ("research-outputs", "update"): 1,
        ("research-outputs", "lock"): 1,
    }


@pytest.mark.parametrize(
    ("source", "kind", "key", "status", "message"),
    [
        ("elements", "publication", "999999", 404, "not found"),
        ("elements", "grant-type", "1", None, "no kind 'grant-type'"),
        ("unicat", "record", "g-1", None, "no source 'unicat' is configured"),
    ],
)
async def test_what_cannot_be_resynced_says_why(
    store: Store,
    elements: ElementsSource,
    source: str,
    kind: str,
    key: str,
    status: int | None,
    message: str,
) -> None:
    with pytest.raises(PermanentError, match=message) as caught:
        await resync_event([elements], source, kind, key)
    async with store.reading() as conn:
        assert await inbox.pending_count(conn) == 0
    assert caught.value.status == status


async def test_the_command_queues_the_object_and_a_run_replicates_it(
    tmp_path: Path,
    config: Config,
    broker: MosquittoBroker,
    topic_prefix: str,
    elements_sim: ElementsSimulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "crisync.toml"
    write_config(path, config, broker, topic_prefix)
    monkeypatch.setenv("CRISYNC_ELEMENTS_PASSWORD", ELEMENTS_PASSWORD)
    monkeypatch.setenv("CRISYNC_PURE_API_KEY", PURE_API_KEY)
    key = str(elements_sim.object_ids("user")[0])

    def cli(*args: str) -> int:
        return main(["resync", *args, "--config", str(path)])

    assert await asyncio.to_thread(cli, "elements", "user", key) == 0
    assert f"queued elements/user/{key}" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "elements", "user", "999999") == EX_NOINPUT
    assert await asyncio.to_thread(cli, "elements", "nonsense", key) == EX_USAGE
    assert "no kind 'nonsense'" in capsys.readouterr().err

    async with Store.open(config.state.path) as store, store.reading() as conn:
        (queued,) = await inbox.claim_ready(conn, busy_keys=[], now=utc_now(), limit=5)
    assert (queued.kind, queued.key, queued.action) == ("user", key, "upsert")
