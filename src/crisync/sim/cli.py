"""`crisync sim elements|pure|unicat`: run one simulator on 127.0.0.1 until Ctrl-C (its clock
follows real time)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import API_NS, API_NS_HTTPS, ElementsSimulator
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.sim.server import serve
from crisync.sim.site import populate_site

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
    populate: bool = False,
) -> int:
    """`populate` (Pure only): start with the content a site's Pure holds (see sim.site)."""
    asyncio.run(
        _serve_until_stopped(
            name,
            port=port,
            objects=objects,
            seed=seed,
            latency_ms=latency_ms,
            elements=elements or ElementsSimOptions(),
            populate=populate,
        )
    )
    return 0


def run_unicat_simulator(
    *, port: int, project: str, api_key: str, records: int, seed: int, latency_ms: int
) -> int:
    simulator = UnicatSimulator(
        project=project,
        api_key=api_key,
        records=records,
        seed=seed,
        latency_ms=latency_ms,
        wall_clock=True,
    )
    asyncio.run(_serve_unicat(simulator, port))
    return 0


async def _serve_unicat(simulator: UnicatSimulator, port: int) -> None:
    async with stop_signals() as stopped, serve(simulator.app(), port) as origin:
        print(f"Unicat API simulator: {origin}")
        print(
            f"  project {simulator.project} (--project), key as given with --api-key; "
            f"{len(simulator.record_gids())} records"
        )
        await stopped.wait()


def pure_organisations(objects: int) -> int:
    """The Pure simulator's own organisations, besides those a populated site adds."""
    return max(1, min(objects, 20))


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
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
    name: str,
    *,
    port: int,
    objects: int,
    seed: int,
    latency_ms: int,
    elements: ElementsSimOptions,
    populate: bool,
) -> None:
    async with stop_signals() as stopped:
        if name == "elements":
            await _serve_elements(
                stopped,
                port=port,
                objects=objects,
                seed=seed,
                latency_ms=latency_ms,
                options=elements,
            )
        else:
            await _serve_pure(stopped, port, objects, seed, latency_ms, populate=populate)


async def _serve_elements(
    stopped: asyncio.Event,
    *,
    port: int,
    objects: int,
    seed: int,
    latency_ms: int,
    options: ElementsSimOptions,
) -> None:
    simulator = ElementsSimulator(
        objects=objects,
        seed=seed,
        latency_ms=latency_ms,
        username=ELEMENTS_USER,
        password=ELEMENTS_PASSWORD,
        items_per_category=options.items,
        date_skew=options.date_skew,
        schema_version=options.schema_version,
        api_namespace=API_NS_HTTPS if options.https_namespace else API_NS,
        fault_rate=options.fault_rate,
        can_modify=not options.read_only,
        wall_clock=True,
    )
    async with serve(simulator.app(), port) as origin:
        print(f"Elements API simulator: {origin}/secure-api/v5.5")
        print(
            f"  user {ELEMENTS_USER!r}, password {ELEMENTS_PASSWORD!r}; "
            f"{len(simulator.object_ids('user'))} users, "
            f"{len(simulator.object_ids('publication'))} publications"
        )
        await stopped.wait()


async def _serve_pure(
    stopped: asyncio.Event,
    port: int,
    objects: int,
    seed: int,
    latency_ms: int,
    *,
    populate: bool,
) -> None:
    pure = PureSimulator(
        api_key=PURE_API_KEY,
        seed=seed,
        latency_ms=latency_ms,
        organizations=pure_organisations(objects),
    )
    # The world `crisync sim elements` serves with the same --objects and --seed.
    site = (
        populate_site(pure, ElementsSimulator(objects=objects, seed=seed), seed=seed)
        if populate
        else None
    )
    async with serve(pure.app(), port) as origin:
        print(f"Pure API simulator: {origin}/ws/api")
        print(f"  api-key {PURE_API_KEY!r}; organisations:")
        for uuid in pure.organization_uuids:
            print(f"    {uuid}")
        if site is not None:
            print(f"  populated as a site's Pure from Elements --objects {objects} --seed {seed}:")
            for line in site.lines():
                print(line)
        await stopped.wait()
