"""A private mosquitto on a free port, for the demo and the tests (which stop and restart it);
the broker a trial run publishes to."""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crisync.config.model import MqttConfig
from crisync.sim.server import free_port


def mosquitto_binary() -> str | None:
    """Debian installs mosquitto in /usr/sbin, which is not on every user's PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


class MosquittoBroker:
    def __init__(
        self,
        workdir: Path,
        *,
        persistence: bool = False,
        max_queued_messages: int | None = None,
        more_listeners: str = "",
    ) -> None:
        """An anonymous listener on 127.0.0.1:port, and `more_listeners` (mosquitto.conf text).

        With `persistence`, retained messages and sessions survive a restart, on disk in workdir.
        `max_queued_messages`: the QoS 1 messages a session may hold beyond those in flight,
        for a client that is away or slow (mosquitto drops the rest; its default is 1000).
        """
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self._binary = binary
        self.port = free_port()
        self._config = workdir / "mosquitto.conf"
        stored = f"true\npersistence_location {workdir}/" if persistence else "false"
        self._log = workdir / "mosquitto.log"
        queue = f"max_queued_messages {max_queued_messages}\n" if max_queued_messages else ""
        self._config.write_text(
            # As root, mosquitto would become its own user, who cannot read the caller's files.
            f"user {getpass.getuser()}\n"
            "per_listener_settings true\n"
            f"persistence {stored}\n"
            f"{queue}"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"{more_listeners}"
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self._log.open("ab") as log_file:  # the child keeps its own copy
            self._process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own config
                [self._binary, "-c", str(self._config)],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = self._log.read_text(errors="replace")[-1000:]
                raise RuntimeError(f"mosquitto exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@dataclass(frozen=True)
class TrialBroker:
    """The broker a trial run (the demo, `crisync sim all`) publishes to."""

    url: str
    host: str
    port: int
    answers: bool  # False: nothing listens there; outcomes stay in the outbox

    def watch_command(self, topic_prefix: str) -> str | None:
        if not self.answers:
            return None
        return f"mosquitto_sub -h {self.host} -p {self.port} -t '{topic_prefix}/#' -v"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def trial_broker(workdir: Path, asked: MqttConfig | None) -> Iterator[TrialBroker]:
    """The broker asked for, else the one on localhost:1883, else a private mosquitto for as
    long as the block runs, else none (`answers` False)."""
    if asked is not None:
        yield TrialBroker(asked.url, asked.host, asked.port, answers=True)
        return
    if _answers("localhost", 1883):
        yield TrialBroker("mqtt://localhost:1883", "localhost", 1883, answers=True)
        return
    if mosquitto_binary() is None:
        yield TrialBroker("mqtt://localhost:1883", "localhost", 1883, answers=False)
        return
    broker = MosquittoBroker(workdir)
    broker.start()
    try:
        yield TrialBroker(broker.url, "127.0.0.1", broker.port, answers=True)
    finally:
        broker.stop()
