"""A state database that cannot be used says why and what to do, from real files.

The tests run as root, who may write a 0444 file in a 0555 directory: an immutable file
(chattr +i) and a read-only bind mount are what refuse root too.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crisync.cli import EX_TEMPFAIL
from crisync.state import outbox
from crisync.state.store import StateDiskFullError, StateUnavailableError, Store
from tests.support.mounts import in_own_mounts, skip_unless_mounting

REBUILD = "rebuild the mapping with `crisync reconcile`"


async def unavailable_because(path: Path) -> str:
    with pytest.raises(StateUnavailableError) as raised:
        async with Store.open(path):
            pass
    message = str(raised.value)
    assert "\n" not in message
    return message


async def a_database_with_rows(path: Path) -> None:
    async with Store.open(path) as store, store.transaction() as conn:
        for n in range(500):
            await outbox.add(conn, f"t/{n}", "x" * 200)


async def test_a_text_file_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_text("[state]\npath = 'oops, the configuration'\n")
    message = await unavailable_because(path)
    assert f"{path} is not an SQLite database" in message
    assert "restore a backup" in message
    assert REBUILD in message


async def test_a_truncated_database_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await a_database_with_rows(path)
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)
    message = await unavailable_because(path)
    assert f"{path} is corrupt or truncated" in message
    assert REBUILD in message


async def test_a_directory_is_not_a_database_file(tmp_path: Path) -> None:
    message = await unavailable_because(tmp_path)
    assert f"{tmp_path} is a directory, not a database file" in message
    assert "set [state] path to a file" in message


async def test_a_file_where_the_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("")
    path = tmp_path / "var" / "lib" / "state.db"
    message = await unavailable_because(path)
    assert f"its directory {path.parent} is missing and cannot be created" in message


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths made immutable by chattr +i, made mutable again at the end (or the test skips)."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def make_immutable(path: Path, made: list[Path]) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("no chattr here")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"this file system keeps no immutable flag: {done.stderr.decode().strip()}")
    made.append(path)


async def test_a_file_no_one_may_write_is_refused_up_front(
    tmp_path: Path, immutable: list[Path]
) -> None:
    """SQLite would open it read-only without a word, and fail at the first write."""
    path = tmp_path / "state.db"
    await a_database_with_rows(path)
    make_immutable(path, immutable)
    message = await unavailable_because(path)
    assert f"no permission to write {path} (Operation not permitted)" in message
    assert "write access to it and its directory" in message


async def test_a_directory_no_one_may_write_in_is_named(
    tmp_path: Path, immutable: list[Path]
) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    make_immutable(directory, immutable)
    message = await unavailable_because(directory / "state.db")
    assert f"no permission to write {directory}/ (Operation not permitted)" in message


async def fill(store: Store, committed: list[str]) -> None:
    """Add messages, one transaction each, until a write fails; `committed` lists them."""
    while True:
        topic = f"t/{len(committed)}"
        async with store.transaction() as conn:
            await outbox.add(conn, topic, "x" * 1000)
        committed.append(topic)


async def test_a_full_disk_rolls_the_transaction_back_and_says_so(tmp_path: Path) -> None:
    """SQLite's page limit stands in for the disk: the same SQLITE_FULL on a real file."""
    path = tmp_path / "state.db"
    async with Store.open(path) as store:
        [[pages]] = await store.write("PRAGMA page_count")
        await store.write(f"PRAGMA max_page_count = {pages + 2}")
        committed: list[str] = []
        with pytest.raises(StateDiskFullError, match=f"the disk holding {path} is full"):
            await fill(store, committed)
        async with store.reading() as conn:
            assert await outbox.depth(conn) == len(committed) > 0
        # Nothing is left half done: with room again, the connection writes on.
        await store.write(f"PRAGMA max_page_count = {pages + 1000}")
        async with store.transaction() as conn:
            await outbox.add(conn, "t/after", "x")
        async with store.reading() as conn:
            assert await outbox.depth(conn) == len(committed) + 1
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_read_only_mount_is_named_by_the_command(tmp_path: Path) -> None:
    """`crisync status` in a mount namespace of its own, where the state's directory is a
    read-only bind mount: what a read-only file system does to root as well."""
    directory = tmp_path / "state"
    asyncio.run(a_database_with_rows(directory / "state.db"))
    config = tmp_path / "crisync.toml"
    config.write_text(f'[state]\npath = "{directory / "state.db"}"\n')
    read_only = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    skip_unless_mounting(read_only, str(directory), "true")
    crisync_status = [sys.executable, "-m", "crisync", "status", "--config", str(config)]
    status = subprocess.run(
        in_own_mounts(read_only, str(directory), *crisync_status),
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == EX_TEMPFAIL
    [line] = status.stderr.splitlines()
    assert f"{directory / 'state.db'} is on a read-only file system" in line
    assert "state.unavailable" in line
