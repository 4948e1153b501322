"""`crisync sim elements|pure|unicat`: run one simulator on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from crisync.sim.elements import ElementsSimulator
from crisync.sim.pure import PureSimulator
from crisync.sim.server import serve
from crisync.sim.unicat import UnicatSimulator

ELEMENTS_USER = "crisync"
ELEMENTS_PASSWORD = "crisync-secret"  # noqa: S105 - the simulator's published demo password
PURE_API_KEY = "pure-secret"


def run_simulator(name: str, *, port: int, objects: int, seed: int, latency_ms: int) -> int:
    asyncio.run(
        _serve_until_stopped(name, port=port, objects=objects, seed=seed, latency_ms=latency_ms)
    )
    return 0


def run_unicat_simulator(
    *, port: int, project: str, api_key: str, records: int, seed: int, latency_ms: int
) -> int:
    simulator = UnicatSimulator(
        project=project, api_key=api_key, records=records, seed=seed, latency_ms=latency_ms
    )
    asyncio.run(_serve_unicat(simulator, port))
    return 0


async def _serve_unicat(simulator: UnicatSimulator, port: int) -> None:
    async with _stop_signals() as stopped, serve(simulator.app(), port) as origin:
        print(f"Unicat API simulator: {origin}")
        print(
            f"  project {simulator.project} (--project), key as given with --api-key; "
            f"{len(simulator.record_gids())} records"
        )
        await stopped.wait()


@contextlib.asynccontextmanager
async def _stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        yield stopped
    finally:
        with contextlib.suppress(NotImplementedError):
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


async def _serve_until_stopped(
    name: str, *, port: int, objects: int, seed: int, latency_ms: int
) -> None:
    async with _stop_signals() as stopped:
        await _serve_one(
            name, stopped, port=port, objects=objects, seed=seed, latency_ms=latency_ms
        )


async def _serve_one(
    name: str, stopped: asyncio.Event, *, port: int, objects: int, seed: int, latency_ms: int
) -> None:
    if name == "elements":
        elements = ElementsSimulator(
            objects=objects,
            seed=seed,
            latency_ms=latency_ms,
            username=ELEMENTS_USER,
            password=ELEMENTS_PASSWORD,
        )
        async with serve(elements.app(), port) as origin:
            print(f"Elements API simulator: {origin}/secure-api/v5.5")
            print(
                f"  user {ELEMENTS_USER!r}, password {ELEMENTS_PASSWORD!r}; "
                f"{len(elements.object_ids('user'))} users, "
                f"{len(elements.object_ids('publication'))} publications"
            )
            await stopped.wait()
    else:
        pure = PureSimulator(
            api_key=PURE_API_KEY,
            seed=seed,
            latency_ms=latency_ms,
            organizations=max(1, min(objects, 20)),
        )
        async with serve(pure.app(), port) as origin:
            print(f"Pure API simulator: {origin}/ws/api")
            print(f"  api-key {PURE_API_KEY!r}; organisations:")
            for uuid in pure.organization_uuids:
                print(f"    {uuid}")
            await stopped.wait()
