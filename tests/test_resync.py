"""`crisync resync --all`: every mapped object fetched again and queued, as it is now."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.lifecycle import Lifecycle
from crisync.listener.base import SourceContext
from crisync.listener.elements.sim import ElementsSimulator
from crisync.listener.sources import open_sources
from crisync.resync import resync_all
from crisync.sim.journals import JOURNALS
from crisync.state import inbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.cli import cli


async def resync_everything(config: Config, **only: str) -> tuple[str, list[tuple[int, int]]]:
    progress: list[tuple[int, int]] = []
    async with Store.open(config.state.path) as store, aiohttp.ClientSession() as session:
        context = SourceContext(store, session, Lifecycle(), Telemetry())
        said = await resync_all(
            store,
            open_sources(config, context),
            only.get("source"),
            only.get("kind"),
            progress=lambda done, total: progress.append((done, total)),
        )
    return said, progress


async def test_resync_all_costs_pure_nothing_unless_the_mapping_changed(
    config: Config, pure_sim: PureSimulator, elements_sim: ElementsSimulator
) -> None:
    await run_daemon(config, once=True)
    users, publications = elements_sim.object_ids("user"), elements_sim.object_ids("publication")
    said, progress = await resync_everything(config)
    assert said.startswith(f"queued {len(users) + len(publications)} mapped object(s)")
    assert progress[-1] == (len(users) + len(publications),) * 2
    async with Store.open(config.state.path) as store, store.reading() as conn:
        # Backfill work: it runs within [pure] backfill_window, leaving changes their share.
        assert await inbox.pending_count(conn, backfill=True) == len(users) + len(publications)
        assert await inbox.pending_count(conn, backfill=False) == 0
    pure_sim.request_counts.clear()
    telemetry = Telemetry()
    await run_daemon(config, once=True, telemetry=telemetry)
    assert telemetry.outcomes == {"unchanged": len(users) + len(publications)}
    # Nothing written; the journals the articles are in, looked up once each for the run.
    assert set(pure_sim.request_counts) <= {("journals", "search")}
    assert pure_sim.request_counts[("journals", "search")] <= len(JOURNALS)

    # A mapping changed: each publication gets one update; the users, nothing.
    elements = config.mappings.sources["elements"]
    rules = elements["publication"]
    noted = rules.model_copy(
        update={
            "properties": {
                **rules.properties,
                "bibliographicalNote.en_GB": rules.properties["title.value"],
            }
        }
    )
    sources = {**config.mappings.sources, "elements": {**elements, "publication": noted}}
    config = config.model_copy(
        update={"mappings": config.mappings.model_copy(update={"sources": sources})}
    )
    said, _ = await resync_everything(config, source="elements", kind="publication")
    assert said.startswith(f"queued {len(publications)} mapped object(s)")
    pure_sim.request_counts.clear()
    telemetry = Telemetry()
    await run_daemon(config, once=True, telemetry=telemetry)
    assert telemetry.outcomes == {"updated": len(publications)}
    # One update each and nothing else, but for the journals looked up once for the run.
    journal_searches = pure_sim.request_counts.pop(("journals", "search"), 0)
    assert journal_searches <= len(JOURNALS)
    assert pure_sim.request_counts == {("research-outputs", "update"): len(publications)}


async def test_resync_all_of_one_kind_from_the_command_line(
    config: Config,
    config_path: Path,
    elements_sim: ElementsSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run_daemon(config, once=True)
    publications = elements_sim.object_ids("publication")
    capsys.readouterr()
    arguments = ["resync", "--config", str(config_path), "--all", "elements", "publication"]
    assert await cli(*arguments) == 0
    assert capsys.readouterr().out.startswith(
        f"queued {len(publications)} mapped object(s) for replication"
    )
    async with Store.open(config.state.path) as store, store.reading() as conn:
        waiting = await inbox.pending_objects(conn)
    assert sorted(waiting) == sorted(("elements", "publication", str(p)) for p in publications)
