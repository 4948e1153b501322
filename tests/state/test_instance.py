"""One crisync at a time on a state database, between real processes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from crisync.cli import EX_OK, EX_TEMPFAIL
from crisync.config.model import Config
from crisync.state.instance import lock_path
from tests.support.daemon import daemon_log, daemon_output, start_daemon
from tests.support.wait import until


async def holding_the_lock(config: Config, config_path: Path) -> asyncio.subprocess.Process:
    """A daemon started, once it holds the lock (its pid is in the lock file)."""
    daemon = await start_daemon(config_path)
    lock = lock_path(config.state.path)
    await until(lambda: lock.exists() and lock.read_text() == f"{daemon.pid}\n", within=20)
    return daemon


async def exit_code(config_path: Path, command: str, *arguments: str) -> tuple[int, float]:
    started = time.monotonic()
    process = await start_daemon(config_path, command, *arguments)
    code = await asyncio.wait_for(process.wait(), 30)
    return code, time.monotonic() - started


async def test_a_second_instance_exits_75_naming_the_first_while_status_and_retry_work(
    config: Config, config_path: Path
) -> None:
    first = await holding_the_lock(config, config_path)
    try:
        for command in ("once", "reconcile", "run"):
            code, seconds = await exit_code(config_path, command)
            assert code == EX_TEMPFAIL, command
            assert seconds < 10  # at once, not after waiting for the lock
        log = daemon_log(config_path).read_text().splitlines()
        refusals = [line for line in log if "state.in_use" in line]
        assert len(refusals) == 3
        for refusal in refusals:
            assert f"{config.state.path} is in use by crisync pid {first.pid}" in refusal
            assert str(lock_path(config.state.path)) in refusal
        # What only reads or queues briefly works beside the daemon.
        assert (await exit_code(config_path, "status", "--json"))[0] == EX_OK
        assert (await exit_code(config_path, "retry", "--all"))[0] == EX_OK
        assert '"dead_letters"' in daemon_output(config_path).read_text()
        assert first.returncode is None  # the first went on
    finally:
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 30) == EX_OK
    # A clean stop lets the next one in.
    assert (await exit_code(config_path, "once"))[0] == EX_OK


async def test_a_killed_daemon_leaves_no_stale_lock(config: Config, config_path: Path) -> None:
    daemon = await holding_the_lock(config, config_path)
    daemon.kill()
    await daemon.wait()
    assert lock_path(config.state.path).read_text() == f"{daemon.pid}\n"  # the file stays
    assert (await exit_code(config_path, "once"))[0] == EX_OK
