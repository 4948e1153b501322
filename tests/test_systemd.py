"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crisync.config.model import Config
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.state import cursors
from crisync.state.store import Store
from crisync.systemd import SystemdNotifier, keep_systemd_informed, status_line
from crisync.telemetry import Telemetry
from tests.support.config_file import write_config
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: a bound datagram socket, read message by message."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # as it goes into $NOTIFY_SOCKET
        self.messages: list[list[str]] = []

    async def next_message(self, within: float = 10) -> list[str]:
        async with asyncio.timeout(within):
            data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        fields = data.decode().split("\n")
        self.messages.append(fields)
        return fields

    async def wait_for(self, field: str, within: float = 20) -> list[str]:
        """Messages until one holds `field` (a whole field, or a prefix ending in '=')."""
        async with asyncio.timeout(within):
            while True:
                fields = await self.next_message(within)
                if any(f == field or (field.endswith("=") and f.startswith(field)) for f in fields):
                    return fields

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))

    def fields(self) -> list[str]:
        return [f for message in self.messages for f in message]


@contextlib.contextmanager
def datagram_socket(address: str) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.setblocking(False)
        yield sock


@pytest.fixture
def systemd_at_path() -> Iterator[FakeSystemd]:
    # A short directory: an AF_UNIX path must fit in 108 bytes, and pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="crisync-") as directory:
        path = str(Path(directory) / "notify")
        with datagram_socket(path) as sock:
            yield FakeSystemd(sock, path)


@pytest.fixture
def systemd_abstract() -> Iterator[FakeSystemd]:
    name = f"crisync-test-{uuid.uuid4().hex}"
    with datagram_socket("\0" + name) as sock:
        yield FakeSystemd(sock, "@" + name)


async def test_crisync_run_says_ready_status_watchdog_then_stopping_on_sigterm(
    tmp_path: Path,
    config: Config,
    elements_sim: ElementsSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
    systemd_at_path: FakeSystemd,
) -> None:
    config_path = tmp_path / "crisync.toml"
    write_config(config_path, config, broker, topic_prefix)
    env = {
        **os.environ,
        "CRISYNC_ELEMENTS_PASSWORD": ELEMENTS_PASSWORD,
        "CRISYNC_PURE_API_KEY": PURE_API_KEY,
        "NOTIFY_SOCKET": systemd_at_path.address,
        "WATCHDOG_USEC": "400000",  # a ping every 0.2 s keeps the test short
    }
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "crisync", "run", "--config", str(config_path)),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await systemd_at_path.wait_for("READY=1")
        assert config.state.path.exists()
        await systemd_at_path.wait_for("WATCHDOG=1")
        daemon.send_signal(signal.SIGTERM)
        stopping = await systemd_at_path.wait_for("STOPPING=1")
        async with asyncio.timeout(20):
            _, stderr = await daemon.communicate()
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
    systemd_at_path.drain()

    assert daemon.returncode == 0, stderr.decode()[-2000:]
    fields = systemd_at_path.fields()
    assert fields[0] == "READY=1"
    assert fields.count("READY=1") == 1
    assert fields.count("STOPPING=1") == 1
    first_status = next(i for i, f in enumerate(fields) if f.startswith("STATUS="))
    assert 0 < first_status < fields.index("WATCHDOG=1") < fields.index("STOPPING=1")
    assert fields[first_status].startswith("STATUS=backlog ")
    assert "outbox " in fields[first_status]
    assert any(f.startswith("STATUS=stopping: backlog ") for f in stopping)


async def test_watchdog_is_withheld_while_a_loop_is_stalled(
    store: Store, systemd_abstract: FakeSystemd
) -> None:
    notifier = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": systemd_abstract.address, "WATCHDOG_USEC": "100000"}
    )
    assert notifier is not None
    assert notifier.watchdog_interval == pytest.approx(0.05)
    telemetry = Telemetry()
    telemetry.expect("dispatcher", 60)
    telemetry.loops["dispatcher"].last_beat -= 120  # silent for two minutes
    stopping = asyncio.Event()
    informing = asyncio.create_task(keep_systemd_informed(notifier, store, telemetry, stopping))
    try:
        assert await systemd_abstract.next_message() == ["READY=1"]
        stalled = await systemd_abstract.next_message()
        assert "WATCHDOG=1" not in stalled
        assert stalled[0].startswith("STATUS=stalled: dispatcher silent for 120s (deadline 60s)")

        telemetry.beat("dispatcher")
        healthy = await systemd_abstract.wait_for("WATCHDOG=1")
        assert not any("stalled" in f for f in healthy)

        stopping.set()
        said_stopping = await systemd_abstract.wait_for("STOPPING=1")
        assert said_stopping[0] == "STOPPING=1"
        await systemd_abstract.next_message()  # still alive while it drains
    finally:
        informing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await informing
    systemd_abstract.drain()
    assert systemd_abstract.fields().count("STOPPING=1") == 1


async def test_a_clash_of_mqtt_client_ids_is_on_the_status_line_while_it_lasts(
    store: Store, systemd_abstract: FakeSystemd
) -> None:
    """The publisher tells the telemetry of a clash (tests/publisher/test_mqtt.py), and only
    the telemetry: the state database, which the rest of the line is read from, has none."""
    notifier = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": systemd_abstract.address, "WATCHDOG_USEC": "100000"}
    )
    assert notifier is not None
    telemetry = Telemetry()
    clash = "since 13:40: client id 'crisync' is in use by another client"
    telemetry.api_state("mqtt", clash)
    informing = asyncio.create_task(
        keep_systemd_informed(notifier, store, telemetry, asyncio.Event())
    )
    try:
        assert await systemd_abstract.next_message() == ["READY=1"]
        said = await systemd_abstract.next_message()
        assert said[0] == f"STATUS=mqtt: {clash} | backlog 0, outbox 0, dead letters 0"
        telemetry.api_state("mqtt", None)  # the connection lasted: the clash is over
        await systemd_abstract.next_message()  # one may have been under way
        over = await systemd_abstract.next_message()
        assert over[0] == "STATUS=backlog 0, outbox 0, dead letters 0"
    finally:
        informing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await informing


async def test_loops_that_end_by_themselves_still_say_stopping(
    store: Store, systemd_abstract: FakeSystemd
) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": systemd_abstract.address})
    assert notifier is not None
    assert notifier.watchdog_interval is None
    informing = asyncio.create_task(
        keep_systemd_informed(notifier, store, Telemetry(), asyncio.Event())
    )
    assert await systemd_abstract.next_message() == ["READY=1"]
    assert "WATCHDOG=1" in await systemd_abstract.next_message()
    informing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await informing
    assert await systemd_abstract.next_message() == ["STOPPING=1"]


async def test_status_line_is_one_line_with_the_queues_and_the_feeds_errors(store: Store) -> None:
    async with store.transaction() as conn:
        await cursors.save(
            conn,
            cursors.Cursor(
                "elements:users",
                last_error="HTTP 503 from Elements:\nService Unavailable",
                last_poll=datetime.now(UTC),
            ),
        )
        await cursors.save(conn, cursors.Cursor("elements:publications"))
    line = await status_line(store, [], stopping=False)
    assert line == (
        "backlog 0, outbox 0, dead letters 0 | "
        "last error: elements:users: HTTP 503 from Elements: Service Unavailable"
    )
    long_stall = ["dispatcher silent for 999s (deadline 120s)"] * 20
    assert len(await status_line(store, long_stall, stopping=True)) == 240


def test_no_notify_socket_means_no_notifier_and_a_foreign_watchdog_is_not_ours() -> None:
    assert SystemdNotifier.from_environment({}) is None
    foreign = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}
    )
    assert foreign == SystemdNotifier("/run/systemd/notify", None)
    ours = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert ours == SystemdNotifier("\0x", 30.0)
