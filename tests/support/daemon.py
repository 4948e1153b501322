"""The daemon as an operator starts it: `python -m crisync ...` with secrets in the environment."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import ELEMENTS_PASSWORD, PURE_API_KEY


def daemon_log(config_path: Path) -> Path:
    """Where a daemon started with this configuration writes its log lines."""
    return config_path.with_suffix(".log")


async def start_daemon(config_path: Path, command: str = "run") -> asyncio.subprocess.Process:
    """Start it with its log in a file: a pipe nobody reads would stop it once full."""
    env = {
        **os.environ,
        "CRISYNC_ELEMENTS_PASSWORD": ELEMENTS_PASSWORD,
        "CRISYNC_PURE_API_KEY": PURE_API_KEY,
    }
    with daemon_log(config_path).open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "crisync",
            command,
            "--config",
            str(config_path),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
