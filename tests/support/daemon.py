"""The daemon as an operator starts it: `python -m crisync ...` with secrets in the environment."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY

# What the simulators of tests/conftest.py accept.
TEST_SECRETS = {
    "CRISYNC_ELEMENTS_PASSWORD": ELEMENTS_PASSWORD,
    "CRISYNC_PURE_API_KEY": PURE_API_KEY,
}


def daemon_log(config_path: Path) -> Path:
    """Where a daemon started with this configuration writes its log lines."""
    return config_path.with_suffix(".log")


def daemon_output(config_path: Path) -> Path:
    """Where a command started with this configuration prints (status, check-config, ...)."""
    return config_path.with_suffix(".out")


async def start_daemon(
    config_path: Path,
    command: str = "run",
    *arguments: str,
    environment: Mapping[str, str] = TEST_SECRETS,
    within: Sequence[str] = (),
) -> asyncio.subprocess.Process:
    """Start `crisync command --config config_path arguments...` with `environment` added.

    `environment` holds the secrets (variables, or CREDENTIALS_DIRECTORY) and any
    CRISYNC_SECTION__KEY overrides. `within` is a command that runs the one it is given
    after it (such as unshare). Its log and output go to files, appended: a pipe nobody
    reads would stop it once full.
    """
    with daemon_log(config_path).open("ab") as log, daemon_output(config_path).open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *within,
            sys.executable,
            "-m",
            "crisync",
            command,
            "--config",
            str(config_path),
            *arguments,
            env={**os.environ, **environment},
            stdout=out,
            stderr=log,
        )
