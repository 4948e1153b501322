"""Progress of long work on a terminal: one line on stderr, drawn again in place.

On a terminal only; elsewhere (a pipe, a file, the journal) a structured `progress.line` log
line says the same every half minute, and stdout, where JSON may go, is never touched. The work
knows nothing of it: a reporter task beside it, in one TaskGroup, reads what the work counts
anyway (its Telemetry, or a Tally) a few times a second. A log line written meanwhile
erases the progress line first; the reporter draws it again below.

Hand-written rather than tqdm or rich: the size of most of this work is not known in
advance (a feed says how much it held only when read to its end), which is not the bar
those draw, and the line needs only a carriage return and an erase-line code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import structlog

from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.progress")

INTERVAL = 0.25  # seconds between two drawings of the line
LOG_INTERVAL = 30.0  # seconds between two progress log lines, off a terminal
ERASE = "\r\x1b[K"  # to the line's start, erase to its end

T = TypeVar("T")
# Seconds since the work started → the progress line.
Describe = Callable[[float], str]


@dataclass
class Tally:
    """Work whose size is known before it starts: `done` of `total`."""

    done: int = 0
    total: int = 0

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total


def work_line(telemetry: Telemetry) -> Describe:
    """What the feeds read, what the handlers made of it, the API requests, and a rate."""

    def describe(elapsed: float) -> str:
        read = sum(telemetry.events_received.values())
        outcomes = telemetry.outcomes
        handled = sum(outcomes.values())
        requests = sum(telemetry.requests.values())
        parts = []
        if read or handled:
            parts.append(f"read {read}")
            by_action = ", ".join(f"{n} {action}" for action, n in sorted(outcomes.items()))
            parts.append(f"handled {handled}" + (f" ({by_action})" if by_action else ""))
        parts.append(f"{requests} API requests")
        rate, unit = (handled, "objects") if handled else (requests, "requests")
        parts.append(f"{rate / max(elapsed, 0.001):.0f} {unit}/s")
        return " · ".join(parts)

    return describe


def tally_line(what: str, tally: Tally) -> Describe:
    """`what` done of the total, a rate, and the time left at that rate."""

    def describe(elapsed: float) -> str:
        rate = tally.done / max(elapsed, 0.001)
        line = f"{what} {tally.done}/{tally.total} · {rate:.0f}/s"
        if tally.done and tally.total > tally.done:
            line += f" · about {(tally.total - tally.done) / rate:.0f} s left"
        return line

    return describe


class TerminalLine:
    """The progress line at the bottom of a terminal; also the stream log lines go through
    while it is shown, each erasing it first."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._shown = False

    def draw(self, text: str) -> None:
        # One character short of the width: a line that wraps cannot be drawn over.
        width = shutil.get_terminal_size().columns - 1
        self._stream.write(ERASE + text[:width])
        self._stream.flush()
        self._shown = True

    def erase(self) -> None:
        if self._shown:
            self._stream.write(ERASE)
            self._stream.flush()
            self._shown = False

    def write(self, text: str) -> int:
        self.erase()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


async def with_progress(
    work: Coroutine[Any, Any, T], describe: Describe, stream: TextIO | None = None
) -> T:
    """`work`'s result, with its progress on `stream` (stderr) if that is a terminal, else a
    `progress.line` log line every LOG_INTERVAL seconds (a pipe, a file, the journal).

    The work fails as it would alone: its exception, not a group of one.
    """
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        return await _beside(work, _log_now_and_then(describe))
    line = TerminalLine(stream)
    with _logs_through(line, stream):
        try:
            return await _beside(work, _report(line, describe))
        finally:
            line.erase()


async def _beside(work: Coroutine[Any, Any, T], reporter: Coroutine[Any, Any, None]) -> T:
    """The work, with a reporter that runs until it ends, in one TaskGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            reporting = group.create_task(reporter, name="progress")
            done = group.create_task(_then_cancel(work, reporting), name="work")
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return done.result()


async def _log_now_and_then(describe: Describe) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(LOG_INTERVAL)
        log.info("progress.line", progress=describe(time.monotonic() - started))


async def _then_cancel(work: Coroutine[Any, Any, T], reporter: asyncio.Task[None]) -> T:
    try:
        return await work
    finally:
        reporter.cancel()


async def _report(line: TerminalLine, describe: Describe) -> None:
    started = time.monotonic()
    while True:
        # Work done within the first interval shows no line at all.
        await asyncio.sleep(INTERVAL)
        line.draw(describe(time.monotonic() - started))


@contextlib.contextmanager
def _logs_through(line: TerminalLine, stream: TextIO) -> Iterator[None]:
    """The log handlers writing to `stream` write through `line` while the block runs."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]
    for handler in handlers:
        handler.setStream(line)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(stream)
