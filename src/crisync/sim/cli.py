"""`crisync sim elements|pure`: run one simulator on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass

from crisync.sim.elements import API_NS, API_NS_HTTPS, ElementsSimulator
from crisync.sim.pure import PureSimulator
from crisync.sim.server import serve

ELEMENTS_USER = "crisync"
ELEMENTS_PASSWORD = "crisync-secret"  # noqa: S105 - the simulator's published demo password
PURE_API_KEY = "pure-secret"


@dataclass(frozen=True)
class ElementsSimOptions:
    """How awkward the Elements simulator is (see ElementsSimulator)."""

    items: int = 0
    date_skew: float = 0.0
    schema_version: str = "5.5"
    https_namespace: bool = False
    fault_rate: float = 0.0
    read_only: bool = False


def run_simulator(
    name: str,
    *,
    port: int,
    objects: int,
    seed: int,
    latency_ms: int,
    elements: ElementsSimOptions | None = None,
) -> int:
    asyncio.run(
        _serve_until_stopped(
            name,
            port=port,
            objects=objects,
            seed=seed,
            latency_ms=latency_ms,
            elements=elements or ElementsSimOptions(),
        )
    )
    return 0


async def _serve_until_stopped(
    name: str,
    *,
    port: int,
    objects: int,
    seed: int,
    latency_ms: int,
    elements: ElementsSimOptions,
) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    if name == "elements":
        simulator = ElementsSimulator(
            objects=objects,
            seed=seed,
            latency_ms=latency_ms,
            username=ELEMENTS_USER,
            password=ELEMENTS_PASSWORD,
            items_per_category=elements.items,
            date_skew=elements.date_skew,
            schema_version=elements.schema_version,
            api_namespace=API_NS_HTTPS if elements.https_namespace else API_NS,
            fault_rate=elements.fault_rate,
            can_modify=not elements.read_only,
        )
        async with serve(simulator.app(), port) as origin:
            print(f"Elements API simulator: {origin}/secure-api/v5.5")
            print(
                f"  user {ELEMENTS_USER!r}, password {ELEMENTS_PASSWORD!r}; "
                f"{len(simulator.object_ids('user'))} users, "
                f"{len(simulator.object_ids('publication'))} publications"
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
    with contextlib.suppress(NotImplementedError):
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
