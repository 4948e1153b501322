"""`crisync sim ...` run as an operator runs it: a child process on a free port."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from crisync.sim.server import free_port


@dataclass
class SimulatorRun:
    port: int
    banner: str = ""  # its first line, printed once it listens
    output: str = ""  # all it printed, once it stopped
    returncode: int | None = None


@asynccontextmanager
async def simulator_process(name: str, *options: str) -> AsyncIterator[SimulatorRun]:
    """`crisync sim NAME --port P OPTIONS` until the block ends (then stopped with SIGTERM)."""
    run = SimulatorRun(free_port())
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crisync",
        "sim",
        name,
        "--port",
        str(run.port),
        *options,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the banner arrives as it is printed
    )
    try:
        assert process.stdout is not None
        run.banner = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        yield run
    finally:
        process.terminate()
        run.output = run.banner + (await process.communicate())[0].decode()
        run.returncode = process.returncode
