"""One crisync at a time on a state database: an exclusive lock on a file beside it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crisync.state.store import StateUnavailableError, check_access, unavailable


class StateInUseError(StateUnavailableError):
    """Another process holds the state database's lock."""

    def __init__(self, path: Path, lock_path: Path, holder: int | None) -> None:
        who = f"crisync pid {holder}" if holder is not None else "another crisync"
        super().__init__(
            path,
            f"{path} is in use by {who} (lock {lock_path})",
            "stop that one first; status, retry and resync work beside it",
        )
        self.holder = holder


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def sole_user(path: Path) -> Iterator[None]:
    """Hold the lock of the state database at `path`, or raise StateInUseError at once.

    flock belongs to the open file, so the kernel releases it when the process ends however
    it ends: a crash never leaves a stale lock, and the file itself may stay. It holds the
    holder's pid for the message of the one refused.
    """
    locked = lock_path(path)
    try:
        check_access(path)
        fd = os.open(locked, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise unavailable(path, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateInUseError(path, locked, _holder(fd)) from None
        try:
            os.ftruncate(fd, 0)
            # A new lock file takes its first block here: on a full disk, ENOSPC.
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            raise unavailable(path, exc) from exc
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> int | None:
    """The pid the holder wrote; None while it has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None
