from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvloop

from crisync import daemon
from crisync.cli import (
    EX_CONFIG,
    EX_DATAERR,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    main,
    run_event_loop,
)
from crisync.config.model import Config
from crisync.daemon import run_daemon
from crisync.handlers.base import SourceRefusedError
from crisync.handlers.pure.mapping import primary_id_of
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port, serve
from crisync.state import dead_letters, inbox
from crisync.state.inbox import ChangeEvent
from crisync.state.store import Store, utc_now
from tests.support.cli import cli
from tests.support.config_file import write_config
from tests.support.convergence import REPLICATED, primary_ids
from tests.support.daemon import TEST_SECRETS, daemon_log, start_daemon
from tests.support.mounts import in_own_mounts, skip_unless_mounting
from tests.support.secrets import PURE_API_KEY


def test_commands_run_on_uvloop() -> None:
    async def loop_class() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert run_event_loop(loop_class()) is uvloop.Loop


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
    pure_sim.fail_next(400, content_type="research-outputs", operation="create")
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


def test_a_failed_loop_exits_70_with_one_line_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def exploding_feeds(running: object, started: object, *, once: bool) -> None:
        raise RuntimeError("listener exploded")

    # Fault injection: a bug in a loop, which the real TaskGroup then reports as a group.
    monkeypatch.setattr(daemon, "_feeds", exploding_feeds)
    path = tmp_path / "crisync.toml"
    path.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n[daemon]\nlog_format = "json"\n')
    with pytest.raises(SystemExit) as exited:
        main(["run", "--config", str(path)])
    assert exited.value.code == daemon.EX_LOOP_FAILED == 70
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    (failed,) = [line for line in lines if line["event"] == "daemon.loop_failed"]
    assert failed["level"] == "error"
    assert (failed["error_class"], failed["error"]) == ("RuntimeError", "listener exploded")
    assert failed["where"].endswith("in exploding_feeds")
    assert not any("exception" in line for line in lines)  # no traceback
    assert "crisync.crashed" not in {line["event"] for line in lines}


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["once"],
        ["status"],
        ["retry", "--all"],
        ["reconcile"],
        ["resync", "elements", "publication", "1"],
    ],
)
async def test_every_command_on_a_state_file_that_is_no_database_exits_75_saying_why(
    command: list[str], config: Config, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.state.path.write_text("this is not the state database\n")
    assert await cli(*command, "--config", str(config_path)) == EX_TEMPFAIL
    [line] = capsys.readouterr().err.splitlines()
    said = json.loads(line)
    assert (said["event"], said["path"]) == ("state.unavailable", str(config.state.path))
    assert said["error"].startswith(f"{config.state.path} is not an SQLite database; ")
    assert "rebuild the mapping with `crisync reconcile`" in said["error"]


def test_a_full_disk_stops_the_daemon_with_75_and_one_line(
    tmp_path: Path,
    broker: MosquittoBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SQLite's page limit on the daemon's own connection stands in for a full disk."""
    committed: list[str] = []

    async def a_feed_filling_the_disk(
        running: daemon.Running, started: asyncio.Event, *, once: bool
    ) -> None:
        store = running.context.store
        [[pages]] = await store.write("PRAGMA page_count")
        await store.write(f"PRAGMA max_page_count = {pages + 20}")
        while True:
            key = str(len(committed))
            change = ChangeEvent(
                "elements:publication",
                "elements",
                "publication",
                key,
                "upsert",
                datetime.now(UTC),
                {"title": "x" * 2000},
            )
            # As every listener does: pages into the inbox, each in a transaction.
            async with store.transaction() as conn:
                await inbox.add_events(conn, [change], utc_now())
            committed.append(key)
            await asyncio.sleep(0.01)

    # Fault injection: a feed that fills the database while the real publisher and feed
    # status loops write beside it.
    monkeypatch.setattr(daemon, "_feeds", a_feed_filling_the_disk)
    state = tmp_path / "state.db"
    path = tmp_path / "crisync.toml"
    path.write_text(
        f'[state]\npath = "{state}"\n[daemon]\nlog_format = "json"\n'
        f'[mqtt]\nurl = "{broker.url}"\ntopic_prefix = "{topic_prefix}"\n'
    )
    assert main(["run", "--config", str(path)]) == EX_TEMPFAIL
    log = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [full] = [line for line in log if line["level"] == "error"]
    assert full["event"] == "state.disk_full"
    assert full["path"] == str(state)
    assert "nothing was lost" in full["error"]
    assert not [line for line in log if "exception" in line]
    assert committed
    with sqlite3.connect(state) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {key for (key,) in check.execute("SELECT key FROM inbox")}
    assert stored == set(committed)


# A tmpfs of 1 MB on the state's directory, full up to `room` bytes, where the command given
# runs; the state is copied out to `saved` before the namespace, and the tmpfs, ends.
ON_A_SMALL_DISK = """
state=$1 room=$2 saved=$3; shift 3
mount -t tmpfs -o size=1m tmpfs "$state" || exit 99
cp "$saved/state.db" "$state/" || exit 99
dd if=/dev/zero of="$state/filler" bs=4k 2>/dev/null
truncate -s "-$room" "$state/filler" || exit 99
"$@"; code=$?
for file in "$state/state.db" "$state/state.db-wal"; do
    [ ! -e "$file" ] || cp "$file" "$saved/"
done
exit $code
"""


@pytest.mark.parametrize("room", [0, 384 * 1024], ids=["no-room", "room-for-a-few-objects"])
async def test_once_on_a_real_full_disk_exits_75_with_one_line_and_loses_nothing(
    room: int,
    tmp_path: Path,
    config_path: Path,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
) -> None:
    """No lock file yet: with no room at all, writing the pid into the lock is the first
    write to fail; with room for a few objects, a write to the database after some were
    created in Pure. Either way crisync stops saying so, and a restart with room again
    replicates every object, once."""
    state = tmp_path / "state"
    saved = tmp_path / "saved"
    state.mkdir()
    saved.mkdir()
    skip_unless_mounting('mount -t tmpfs -o size=1m tmpfs "$1"', str(state))
    async with Store.open(saved / "state.db"):
        pass  # a database crisync made, with nothing in it yet

    on_the_tmpfs = {"CRISYNC_STATE__PATH": str(state / "state.db")}
    process = await start_daemon(
        config_path,
        "once",
        environment=TEST_SECRETS | on_the_tmpfs,
        within=in_own_mounts(ON_A_SMALL_DISK, str(state), str(room), str(saved)),
    )
    async with asyncio.timeout(60):
        assert await process.wait() == EX_TEMPFAIL
    log = [json.loads(line) for line in daemon_log(config_path).read_text().splitlines()]
    [full] = [line for line in log if line["level"] == "error"]
    assert (full["event"], full["path"]) == ("state.disk_full", on_the_tmpfs["CRISYNC_STATE__PATH"])
    assert "nothing was lost" in full["error"]
    assert not [line for line in log if "exception" in line]
    with sqlite3.connect(saved / "state.db") as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    assert await run_once(config_path, CRISYNC_STATE__PATH=str(saved / "state.db")) == 0
    for category, pure_type in REPLICATED.items():
        every_one_once = Counter(
            primary_id_of("elements", category, str(key))
            for key in elements_sim.object_ids(category)
        )
        assert primary_ids(pure_sim, pure_type) == every_one_once


async def test_status_groups_dead_letters_by_their_error_and_lists_each_with_all(
    config: Config,
    config_path: Path,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pure_sim.fail_next(400, count=5, content_type="research-outputs", operation="create")
    await run_daemon(config, once=True)
    capsys.readouterr()
    assert await cli("status", "--config", str(config_path)) == 0
    grouped = capsys.readouterr().out.splitlines()
    assert "dead letters: 5" in grouped
    [group] = [line for line in grouped if line.startswith("  5 objects: PermanentError 400 ")]
    [examples] = [line for line in grouped if line.startswith("      e.g. elements/publication/")]
    assert examples.count("elements/publication/") == 3
    assert ", and 2 more; last " in examples
    assert await cli("status", "--all", "--config", str(config_path)) == 0
    listed = [
        line for line in capsys.readouterr().out.splitlines() if ": PermanentError 400 " in line
    ]
    assert len(listed) == 5
    assert group.removeprefix("  5 objects: PermanentError 400 ") in listed[0]


async def run_once(config_path: Path, *arguments: str, **overrides: str) -> int:
    """`crisync once` as a process of its own (its signal handlers need a main thread)."""
    process = await start_daemon(
        config_path, "once", *arguments, environment=TEST_SECRETS | overrides
    )
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


async def test_once_with_a_refused_pure_key_gives_up_at_once_with_69_and_keeps_the_work(
    config: Config, config_path: Path, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    """A key is not mended during one run: `once` stops when the feeds are read, not after
    `once_outage_timeout` (300 s here, as by default)."""
    started = time.monotonic()
    assert await run_once(config_path, CRISYNC_PURE_API_KEY="not-the-key") == EX_UNAVAILABLE
    assert time.monotonic() - started < 30
    events = [json.loads(line) for line in daemon_log(config_path).read_text().splitlines()]
    [gave_up] = [e for e in events if e["event"] == "circuit.gave_up"]
    assert gave_up["api"] == "pure"
    assert gave_up["reason"].startswith("refused the credentials (HTTP 401)")
    assert gave_up["detail"].startswith("pure refuses crisync's credentials; ")
    assert not [e for e in events if e["event"] == "object.failed"]
    async with Store.open(config.state.path) as store, store.reading() as conn:
        assert await dead_letters.count(conn) == 0
        waiting = await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
    every_object = len(elements_sim.object_ids("user")) + len(
        elements_sim.object_ids("publication")
    )
    assert len(waiting) == gave_up["waiting"] == every_object
    assert {event.attempts for event in waiting} == {0}
    assert pure_sim.objects("persons") == pure_sim.objects("research-outputs") == {}


async def test_once_that_made_dead_letters_exits_65(
    config_path: Path, pure_sim: PureSimulator
) -> None:
    pure_sim.fail_next(400, content_type="research-outputs", operation="create")
    assert await run_once(config_path) == EX_DATAERR
    assert await run_once(config_path) == 0  # nothing new failed


async def test_a_new_state_database_against_a_pure_crisync_filled_is_refused_with_78(
    tmp_path: Path,
    config: Config,
    config_path: Path,
    pure_sim: PureSimulator,
    elements_sim: ElementsSimulator,
) -> None:
    await run_daemon(config, once=True)
    filled = {kind: len(pure_sim.objects(kind)) for kind in ("persons", "research-outputs")}
    fresh = {"CRISYNC_STATE__PATH": str(tmp_path / "fresh.db")}

    assert await run_once(config_path, **fresh) == EX_CONFIG
    events = [json.loads(line) for line in daemon_log(config_path).read_text().splitlines()]
    [refused] = [e for e in events if e["event"] == "state.foreign_content"]
    assert refused["level"] == "error"
    assert refused["path"] == fresh["CRISYNC_STATE__PATH"]
    assert "state database maps nothing: `crisync reconcile` rebuilds" in refused["error"]
    assert not [e for e in events if e["event"] == "object.replicated"]
    assert {kind: len(pure_sim.objects(kind)) for kind in filled} == filled

    # Told to, it replicates: the persons of this configuration (no match rule) twice; the
    # research outputs its match rules find (by DOI, Scopus id) are taken over, not copied.
    assert await run_once(config_path, "--allow-empty-state", **fresh) == 0
    unfindable = [p for p in elements_sim.publications() if p.doi is None and p.scopus_id is None]
    assert {kind: len(pure_sim.objects(kind)) for kind in filled} == {
        "persons": 2 * filled["persons"],
        "research-outputs": filled["research-outputs"] + len(unfindable),
    }


PLACEHOLDER_UUID = "00000000-0000-0000-0000-000000000000"


async def test_once_with_a_placeholder_organisation_stops_with_78_and_burns_no_object(
    config: Config,
    config_path: Path,
    elements_sim: ElementsSimulator,
    pure_sim: PureSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    placeholder = {"CRISYNC_PURE__MANAGING_ORGANIZATION": PLACEHOLDER_UUID}
    assert await run_once(config_path, **placeholder) == EX_CONFIG
    events = [json.loads(line) for line in daemon_log(config_path).read_text().splitlines()]
    assert not [e for e in events if e["event"] == "object.failed"]
    [opened] = [e for e in events if e["event"] == "circuit.opened"]
    assert opened["reason"].startswith("refused the configuration: 10 of the first ")
    assert f"no Organization with uuid {PLACEHOLDER_UUID}" in opened["reason"]
    [gave_up] = [e for e in events if e["event"] == "circuit.gave_up"]
    assert gave_up["waiting"] == len(elements_sim.object_ids("publication"))
    assert pure_sim.objects("research-outputs") == {}

    capsys.readouterr()
    assert await cli("status", "--config", str(config_path)) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith("pure refused the configuration: 10 of the first ")
    assert "dead letters: 0" in said
    async with Store.open(config.state.path) as store, store.reading() as conn:
        waiting = await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
    assert {event.attempts for event in waiting} == {0}


def test_version_is_the_installed_package_s(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"crisync {importlib.metadata.version('crisync')}\n"


def test_help_says_what_crisync_is_and_sums_up_each_command_in_a_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # a terminal's usual width
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    description = " ".join(text.split("\n\n")[1].split())
    assert description.startswith(
        "crisync replicates the changes made in Symplectic Elements and Unicat into Elsevier Pure"
    )
    # The command list: each line a command's name and its summary, no line of its own for
    # a long name, no summary wrapped onto the next line.
    listed = [line.split(maxsplit=1) for line in text.splitlines() if line.startswith("    ")]
    assert [words[0] for words in listed] == [
        "run",
        "once",
        "check-config",
        "status",
        "retry",
        "reconcile",
        "resync",
        "plan",
        "show",
        "demo",
        "sim",
    ]
    assert all(len(words) == 2 for words in listed)


async def test_a_first_run_with_a_key_that_may_not_write_stops_with_78_before_writing(
    tmp_path: Path, config_path: Path, pure_sim: PureSimulator
) -> None:
    limited = PureSimulator(
        api_key=PURE_API_KEY,
        access={
            t: ["read"] for t in ("persons", "external-persons", "research-outputs", "journals")
        },
    )
    async with serve(limited.app()) as origin:
        override = {"CRISYNC_PURE__URL": f"{origin}/ws/api"}
        override["CRISYNC_PURE__MANAGING_ORGANIZATION"] = limited.organization_uuids[0]
        assert await run_once(config_path, **override) == EX_CONFIG
    events = [json.loads(line) for line in daemon_log(config_path).read_text().splitlines()]
    [refused] = [e for e in events if e["event"] == "target.rights_missing"]
    assert refused["error"] == (
        "the API key's access definition: may not write external-persons; may not write "
        "persons; may not write research-outputs"
    )
    assert not [e for e in events if e["event"] == "object.replicated"]
    assert all(not limited.objects(t) for t in ("persons", "research-outputs"))


async def test_a_write_back_elements_cannot_take_stops_once_with_78_before_pure_is_asked(
    config_path: Path, pure_sim: PureSimulator
) -> None:
    with config_path.open("a") as file:
        file.write('\n[elements.writeback.publications]\nsource = "nope"\nfield = "notes"\n')
    assert await run_once(config_path) == EX_CONFIG
    events = [json.loads(line) for line in daemon_log(config_path).read_text().splitlines()]
    [refused] = [e for e in events if e["event"] == "source.refused"]
    assert refused["error"].startswith(
        "write-back of publication to field 'notes' of source 'nope' is misconfigured: "
        "no publication data source is named 'nope'"
    )
    # Refused before the dispatcher started: Pure was not even read.
    assert pure_sim.request_counts == {}


async def test_a_first_run_the_account_may_not_read_a_category_stops_before_any_write(
    config: Config, elements_sim: ElementsSimulator, pure_sim: PureSimulator
) -> None:
    elements_sim.fail_next(403, "unauthorised access", path="/publications")
    with pytest.raises(
        SourceRefusedError, match=r"^the Elements account may not read publications$"
    ):
        await run_daemon(config, once=True)
    assert pure_sim.request_counts == {}
    async with Store.open(config.state.path) as store, store.reading() as conn:
        assert await inbox.pending_objects(conn) == []  # no feed was read either
    # Once something is mapped, no start asks again: a right taken away parks the feed.
    await run_daemon(config, once=True)
    asked = len(elements_sim.requests)
    elements_sim.fail_next(403, "unauthorised access", path="/publications")
    await run_daemon(config, once=True)
    read = [t for _, t in elements_sim.requests[asked:] if "/publications?" in t]
    [publications] = [t for t in read if "/deleted/" not in t]
    assert "affected-since=" in publications  # the feed's request, not the check's
