"""Progress on a terminal: drawn in place while the work runs, erased after, absent elsewhere."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import structlog

from crisync import progress
from crisync.logs import configure_logging
from crisync.progress import ERASE, INTERVAL, Tally, tally_line, with_progress, work_line
from crisync.telemetry import Telemetry
from tests.support.daemon import TEST_SECRETS


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def feeds_and_handlers(telemetry: Telemetry) -> str:
    """Work that reads and handles for a few intervals, as `once` does."""
    for _ in range(4):
        telemetry.received("elements:publications", 25)
        telemetry.request("elements", "GET", 200, 0.01)
        telemetry.outcome("created")
        await asyncio.sleep(INTERVAL)
    return "done"


async def test_on_a_terminal_the_line_counts_up_in_place_and_is_erased_at_the_end() -> None:
    telemetry, terminal = Telemetry(), Terminal()
    assert await with_progress(feeds_and_handlers(telemetry), work_line(telemetry), terminal) == (
        "done"
    )
    drawn = terminal.getvalue().split(ERASE)
    assert drawn[-1] == ""  # erased: what the command prints next starts on a clean line
    lines = [line for line in drawn if line]
    assert len(lines) >= 2
    assert "\n" not in "".join(lines)
    assert lines[0].startswith("read 25 · handled 1 (1 created) · 1 API requests · ")
    assert lines[-1].startswith("read 100 · handled 4 (4 created) · 4 API requests · ")
    assert lines[-1].endswith(" objects/s")


async def test_in_a_pipe_nothing_is_drawn_and_a_log_line_says_it_now_and_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL", INTERVAL)
    telemetry, pipe = Telemetry(), io.StringIO()
    with structlog.testing.capture_logs() as logs:
        done = await with_progress(feeds_and_handlers(telemetry), work_line(telemetry), pipe)
    assert done == "done"
    assert pipe.getvalue() == ""
    lines = [entry for entry in logs if entry["event"] == "progress.line"]
    assert len(lines) >= 2
    assert lines[0]["progress"].startswith("read 25 · handled 1 (1 created)")


async def test_work_that_fails_fails_with_its_own_error() -> None:
    async def failing() -> None:
        await asyncio.sleep(INTERVAL * 1.5)
        raise LookupError("no such object")

    terminal = Terminal()
    with pytest.raises(LookupError, match="no such object"):
        await with_progress(failing(), work_line(Telemetry()), terminal)
    assert terminal.getvalue().endswith(ERASE)


async def test_a_log_line_erases_the_progress_line_before_it_and_the_line_comes_back() -> None:
    terminal = Terminal()
    configure_logging("json")
    logging.getLogger().handlers[0].setStream(terminal)  # as it is on stderr

    async def logging_work() -> None:
        await asyncio.sleep(INTERVAL * 1.5)
        structlog.get_logger("crisync").info("object.replicated", key="1042")
        await asyncio.sleep(INTERVAL * 1.5)

    await with_progress(logging_work(), work_line(Telemetry()), terminal)
    before, _, after = terminal.getvalue().partition('{"key": "1042"')
    assert before.endswith(ERASE)  # the progress line drawn so far is gone first
    log_line, _, rest = after.partition("\n")
    assert ERASE not in log_line
    assert "API requests" in rest  # drawn again below
    assert logging.getLogger().handlers[0].stream is terminal  # handed back


def test_known_work_says_how_much_is_left() -> None:
    tally = Tally()
    tally.update(100, 400)
    assert tally_line("fetched", tally)(10.0) == "fetched 100/400 · 10/s · about 30 s left"


def _plan_with_stderr_on(stderr: int, config_path: Path) -> subprocess.CompletedProcess[bytes]:
    """`crisync plan --json`, its stdout piped."""
    return subprocess.run(
        [sys.executable, "-m", "crisync", "plan", "--json", "--config", str(config_path)],
        env={**os.environ, **TEST_SECRETS, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=stderr,
        timeout=60,
        check=False,
    )


async def test_plan_on_a_terminal_shows_progress_on_stderr_and_keeps_its_json_clean(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests spaced out, so that the plan lasts a few intervals.
    monkeypatch.setenv("CRISYNC_ELEMENTS__REQUEST_GAP", "0.1")
    controller, terminal = pty.openpty()
    drawn = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's last user is gone
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    try:
        planned = await asyncio.to_thread(_plan_with_stderr_on, terminal, config_path)
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    assert planned.returncode == 0
    assert json.loads(planned.stdout)["summary"]
    assert ERASE.encode() in drawn
    assert b"API requests" in drawn

    piped = await asyncio.to_thread(_plan_with_stderr_on, subprocess.PIPE, config_path)
    assert piped.returncode == 0
    assert json.loads(piped.stdout)["summary"]
    assert b"API requests" not in piped.stderr
    assert ERASE.encode() not in piped.stderr
