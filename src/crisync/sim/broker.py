"""A private mosquitto on a free port, for the demo and the tests (which stop and restart it)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

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
