"""The daemon as an operator starts it: `python -m crisync ...` with secrets in the environment."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import ELEMENTS_PASSWORD, PURE_API_KEY


async def start_daemon(config_path: Path, command: str = "run") -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CRISYNC_ELEMENTS_PASSWORD": ELEMENTS_PASSWORD,
        "CRISYNC_PURE_API_KEY": PURE_API_KEY,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crisync",
        command,
        "--config",
        str(config_path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
