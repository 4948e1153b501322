"""`crisync reconcile`: the mapping rebuilt from, or checked against, the PrimaryIds in Pure."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from crisync.cli import main
from crisync.config.model import Config
from crisync.daemon import http_session, run_daemon
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.reconcile import reconcile
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.state import external_persons, mapping
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.handlers.pure.helpers import editor_copy, mapped, replicate_next
from tests.support.events import enqueue, publication, user


def pure_counts(pure_sim: PureSimulator) -> dict[str, int]:
    types = ("persons", "research-outputs", "external-persons")
    return {pure_type: len(pure_sim.objects(pure_type)) for pure_type in types}


async def test_after_losing_the_state_database_reconcile_prevents_every_duplicate(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    await run_daemon(config, once=True)
    before = pure_counts(pure_sim)
    assert before["research-outputs"] == len(elements_sim.object_ids("publication"))
    for lost in config.state.path.parent.glob(f"{config.state.path.name}*"):
        lost.unlink()

    assert config.pure is not None
    async with Store.open(config.state.path) as store, http_session() as session:
        client = PureClient(session, config.pure, telemetry=Telemetry())
        report = await reconcile(store, client, config.mappings, apply=True)
        async with store.reading() as conn:
            rebuilt = await mapping.count(conn)
            externals = await external_persons.all_external_persons(conn)
    assert (
        len(report.unknown_in_mapping) == rebuilt == before["persons"] + before["research-outputs"]
    )
    assert len(externals) == before["external-persons"]
    assert report.skipped.keys() == {"equipment", "activities"}  # not in the 2023-08 API

    pure_sim.request_counts.clear()
    await run_daemon(config, once=True)  # every object comes again from a fresh feed sweep
    assert pure_counts(pure_sim) == before
    assert not any(op == "create" for _, op in pure_sim.request_counts)


async def test_check_reports_every_kind_of_difference_and_apply_repairs_what_it_can(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(
        context.store,
        user("1", "Lovelace"),
        *(publication(str(n), f"Title {n}") for n in range(1, 6)),
    )
    for _ in range(6):
        await replicate_next(context)
    rows = {}
    for n in range(1, 6):
        row = await mapped(context.store, "publication", str(n))
        assert row is not None
        rows[n] = row
    stored = pure_sim.objects("research-outputs")[rows[2].target_uuid]
    survivor = await context.pure.create("research-outputs", editor_copy(stored))
    await context.pure.delete("research-outputs", rows[1].target_uuid)  # missing in Pure
    pure_sim.merge("research-outputs", rows[2].target_uuid, survivor["uuid"])  # moved
    pure_sim.edit("research-outputs", rows[3].target_uuid, {"identifiers": []})  # lost its id
    duplicate = dict(pure_sim.objects("research-outputs")[rows[4].target_uuid])
    for server_managed in ("uuid", "pureId", "version", "createdBy", "createdDate"):
        duplicate.pop(server_managed)
    copy = await context.pure.create("research-outputs", duplicate)  # two carry one id
    async with context.store.transaction() as conn:
        await mapping.delete(conn, "elements", "publication", "5")  # unknown in the mapping
        person = await mapping.get(conn, "elements", "user", "1")
        assert person is not None
        await mapping.put(conn, replace(person, match_key=None))  # a row from before match keys

    check = await reconcile(context.store, context.pure, context.mappings, apply=False)
    assert [d.object_key for d in check.missing_in_pure] == ["elements/publication/1"]
    assert [(d.object_key, d.pure_uuids) for d in check.uuid_mismatches] == [
        ("elements/publication/2", (survivor["uuid"],))
    ]
    assert [d.object_key for d in check.without_primary_id] == ["elements/publication/3"]
    assert [(d.object_key, set(d.pure_uuids)) for d in check.duplicates] == [
        ("elements/publication/4", {rows[4].target_uuid, copy["uuid"]})
    ]
    assert [d.object_key for d in check.unknown_in_mapping] == ["elements/publication/5"]
    assert check.match_keys_filled == 1
    assert not check.consistent
    assert await mapped(context.store, "publication", "5") is None  # a check writes nothing

    applied = await reconcile(context.store, context.pure, context.mappings, apply=True)
    assert applied.unknown_in_mapping == check.unknown_in_mapping
    assert await mapped(context.store, "publication", "1") is None
    moved = await mapped(context.store, "publication", "2")
    assert moved is not None
    assert (moved.target_uuid, moved.payload_hash, moved.locked) == (survivor["uuid"], b"", False)
    assert await mapped(context.store, "publication", "3") == rows[3]
    assert await mapped(context.store, "publication", "4") == rows[4]
    rebuilt = await mapped(context.store, "publication", "5")
    assert rebuilt is not None
    assert rebuilt.target_uuid == rows[5].target_uuid
    person = await mapped(context.store, "user", "1")
    assert person is not None
    assert person.match_key == "lovelace|a"

    again = await reconcile(context.store, context.pure, context.mappings, apply=False)
    assert again.missing_in_pure == again.uuid_mismatches == again.unknown_in_mapping == []
    assert again.match_keys_filled == 0


async def test_the_command_rebuilds_and_its_check_says_whether_all_is_consistent(
    context: PureContext, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await enqueue(context.store, publication("1", "Title 1"), publication("2", "Title 2"))
    for _ in range(2):
        await replicate_next(context)
    async with context.store.transaction() as conn:
        await mapping.delete(conn, "elements", "publication", "2")

    def cli(*args: str) -> int:
        capsys.readouterr()
        return main([*args, "--config", str(config_path)])

    assert await asyncio.to_thread(cli, "reconcile", "--check") == 1
    out = capsys.readouterr().out
    assert "unknown in the mapping: 1 (to rebuild)" in out
    assert "elements/publication/2 research-outputs mapped -" in out
    assert "(to rebuild)" in out
    assert "differences found" in out
    assert await asyncio.to_thread(cli, "reconcile") == 0
    assert "(rebuilt)" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "reconcile", "--check") == 0
    assert capsys.readouterr().out.rstrip().endswith("consistent")
