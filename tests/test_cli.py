from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from crisync import daemon
from crisync.cli import EX_DATAERR, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE, main
from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port
from crisync.state import dead_letters, inbox
from crisync.state.store import Store
from tests.support.config_file import write_config
from tests.support.daemon import TEST_SECRETS, daemon_log, start_daemon
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY


@pytest.fixture
def config_path(
    tmp_path: Path,
    config: Config,
    broker: MosquittoBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    path = tmp_path / "crisync.toml"
    write_config(path, config, broker, topic_prefix)
    monkeypatch.setenv("CRISYNC_ELEMENTS_PASSWORD", ELEMENTS_PASSWORD)
    monkeypatch.setenv("CRISYNC_PURE_API_KEY", PURE_API_KEY)
    return path


async def cli(*args: str) -> int:
    """The command as a user runs it; in a thread, since it runs its own event loop."""
    return await asyncio.to_thread(main, list(args))


async def status(config_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()  # what the daemon logged before
    assert await cli("status", "--json", "--config", str(config_path)) == 0
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


async def test_status_then_retry_of_a_dead_letter(
    config: Config,
    config_path: Path,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pure_sim.fail_next(400, content_type="research-outputs")
    await run_daemon(config, once=True)
    report = await status(config_path, capsys)
    letters = report["dead_letters"]
    assert isinstance(letters, list)
    assert len(letters) == 1
    assert letters[0]["status"] == 400
    assert report["backlog"] == 0
    assert report["outbox_depth"] == 0
    total = len(elements_sim.object_ids("user")) + len(elements_sim.object_ids("publication"))
    assert report["mapped_objects"] == total - 1
    feeds = report["cursors"]
    assert isinstance(feeds, list)
    assert {c["feed"] for c in feeds} == {
        "elements:users",
        "elements:publications",
        "elements:deleted:users",
        "elements:deleted:publications",
    }

    key = f"{letters[0]['source']}/{letters[0]['kind']}/{letters[0]['key']}"
    assert await cli("retry", "--config", str(config_path), "elements/publication/nope") == EX_USAGE
    assert await cli("retry", "--config", str(config_path), key) == 0
    assert "requeued 1" in capsys.readouterr().out
    await run_daemon(config, once=True)
    report = await status(config_path, capsys)
    assert report["dead_letters"] == []
    assert report["mapped_objects"] == total
    assert len(pure_sim.objects("research-outputs")) == len(elements_sim.object_ids("publication"))


def test_status_on_a_fresh_machine_says_there_is_no_state_yet(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--config", str(config_path)]) == 0
    assert "no state database" in capsys.readouterr().out


def test_an_unexpected_failure_exits_1_with_its_traceback_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def exploding_feeds(running: object, *, once: bool) -> None:
        raise RuntimeError("listener exploded")

    # Fault injection: a bug in a loop, which the real TaskGroup then reports as a group.
    monkeypatch.setattr(daemon, "_feeds", exploding_feeds)
    path = tmp_path / "crisync.toml"
    path.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n[daemon]\nlog_format = "json"\n')
    assert main(["run", "--config", str(path)]) == EX_SOFTWARE
    log = capsys.readouterr().err
    crashed = next(json.loads(line) for line in log.splitlines() if "crisync.crashed" in line)
    assert crashed["level"] == "error"
    assert "Traceback" in crashed["exception"]
    assert "RuntimeError: listener exploded" in crashed["exception"]


async def run_once(config_path: Path, **overrides: str) -> int:
    """`crisync once` as a process of its own (its signal handlers need a main thread)."""
    process = await start_daemon(config_path, "once", environment=TEST_SECRETS | overrides)
    async with asyncio.timeout(60):
        return await process.wait()


async def test_once_with_pure_out_of_reach_gives_up_with_69_and_keeps_the_work(
    tmp_path: Path,
    config: Config,
    broker: MosquittoBroker,
    topic_prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert config.pure is not None
    out_of_reach = config.pure.model_copy(update={"url": f"http://127.0.0.1:{free_port()}/ws/api"})
    path = tmp_path / "crisync.toml"
    write_config(path, config.model_copy(update={"pure": out_of_reach}), broker, topic_prefix)

    assert await run_once(path, CRISYNC_DAEMON__ONCE_OUTAGE_TIMEOUT="1") == EX_UNAVAILABLE
    events = [json.loads(line) for line in daemon_log(path).read_text().splitlines()]
    (gave_up,) = [e for e in events if e["event"] == "circuit.gave_up"]
    assert gave_up["api"] == "pure"
    assert gave_up["waiting"] > 0
    assert len([e for e in events if e["event"] == "circuit.opened"]) == 1
    assert not [e for e in events if e["event"] == "object.failed"]
    async with Store.open(config.state.path) as store, store.reading() as conn:
        assert await dead_letters.count(conn) == 0
        waiting = await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
    assert len(waiting) == gave_up["waiting"]
    assert {event.attempts for event in waiting} == {0}

    for name, value in TEST_SECRETS.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert await cli("status", "--config", str(path)) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("pure unreachable since ")
    assert first_line.endswith(f" UTC, {len(waiting)} waiting")


async def test_once_that_made_dead_letters_exits_65(
    config_path: Path, pure_sim: PureSimulator
) -> None:
    pure_sim.fail_next(400, content_type="research-outputs")
    assert await run_once(config_path) == EX_DATAERR
    assert await run_once(config_path) == 0  # nothing new failed
