"""systemd's notify protocol: ready, alive, what the daemon is doing, stopping.

Under `Type=notify` systemd names an AF_UNIX datagram socket in $NOTIFY_SOCKET (a path, or
an abstract name written with a leading '@') and, with `WatchdogSec=`, the watchdog period in
$WATCHDOG_USEC. Each message is one datagram of newline-separated KEY=VALUE fields
(sd_notify(3)). Without $NOTIFY_SOCKET nobody is listening and there is no notifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from crisync.state import api_circuits, cursors, dead_letters, inbox, outbox
from crisync.state.store import Store
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.systemd")

# Seconds between two STATUS= updates when the watchdog does not ask for more often.
STATUS_INTERVAL = 15.0
# systemd shows STATUS= on one line of `systemctl status`; longer says nothing more.
STATUS_MAX_CHARS = 240


@dataclass(frozen=True)
class SystemdNotifier:
    address: str  # a filesystem path, or an abstract name starting with NUL
    watchdog_interval: float | None  # seconds between WATCHDOG=1: half the watchdog period

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> SystemdNotifier | None:
        address = env.get("NOTIFY_SOCKET")
        if not address:
            return None
        if address.startswith("@"):
            address = "\0" + address[1:]
        return cls(address, _watchdog_interval(env))

    def notify(self, *fields: str) -> None:
        """Send one message; best effort, since a lost one must not stop the daemon."""
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # systemd reads at once; never let a full queue block the event loop.
                sock.setblocking(False)
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("systemd.notify_failed", error=str(exc))


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; None when not ours or unset."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        microseconds = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return microseconds / 2e6 if microseconds > 0 else None


async def status_line(
    store: Store, stalled: list[str], *, stopping: bool, broker_refusal: str | None = None
) -> str:
    """One line for `systemctl status`: stalls and APIs that are out first, then the queues,
    then the feeds' errors.

    `broker_refusal`: why the broker does not take crisync's outcomes (another client with its
    client id), which only the running daemon knows; the state database does not say it.
    """
    async with store.reading() as conn:
        unavailable = [
            *await api_circuits.describe_open(conn),
            *await cursors.describe_parked(conn),
            *([f"mqtt: {broker_refusal}"] if broker_refusal else []),
        ]
        backlog = await inbox.pending_count(conn)
        outbox_depth = await outbox.depth(conn)
        dead = await dead_letters.count(conn)
        feed_errors = [
            f"{c.feed}: {c.last_error}"
            for c in await cursors.all_cursors(conn)
            if c.last_error and c.parked_until is None  # a park is said first already
        ]
    parts = [f"stalled: {'; '.join(stalled)}"] if stalled else []
    parts.extend(unavailable)
    parts.append(f"backlog {backlog}, outbox {outbox_depth}, dead letters {dead}")
    if feed_errors:
        parts.append(f"last error: {'; '.join(feed_errors)}")
    line = ("stopping: " if stopping else "") + " | ".join(parts)
    line = " ".join(line.split())  # errors may carry newlines; STATUS= is one line
    return line if len(line) <= STATUS_MAX_CHARS else line[: STATUS_MAX_CHARS - 1] + "…"


async def keep_systemd_informed(
    notifier: SystemdNotifier, store: Store, telemetry: Telemetry, stopping: asyncio.Event
) -> None:
    """READY=1 now (the state is open, the loops run), then STATUS= and WATCHDOG=1 in turn.

    WATCHDOG=1 is withheld while a loop is stalled, so systemd restarts a daemon that is alive
    but makes no progress. STOPPING=1 goes out when shutdown begins: on SIGTERM, or when this
    task is cancelled because the loops ended.
    """
    interval = min(STATUS_INTERVAL, notifier.watchdog_interval or STATUS_INTERVAL)
    notifier.notify("READY=1")
    told_stopping = False
    try:
        while True:
            stalled = telemetry.stalled()
            line = await status_line(
                store,
                stalled,
                stopping=stopping.is_set(),
                broker_refusal=telemetry.api_outages.get("mqtt"),
            )
            fields = [f"STATUS={line}"]
            if not stalled:
                fields.append("WATCHDOG=1")
            if stopping.is_set() and not told_stopping:
                fields.insert(0, "STOPPING=1")
                told_stopping = True
            notifier.notify(*fields)
            if told_stopping:
                await asyncio.sleep(interval)
            else:  # woken early by SIGTERM, to say STOPPING=1 at once
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await stopping.wait()
    except asyncio.CancelledError:
        if not told_stopping:
            notifier.notify("STOPPING=1")
        raise
