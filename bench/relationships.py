"""What reading relationships costs in Elements requests: a backfill and a steady state.

    .venv/bin/python bench/relationships.py [--objects 2000]

The Elements listener sweeps the simulator's publications (in this process, no Pure, no
broker: only Elements requests are counted), with relationships read and without, at
detail full and ref. Then a steady state: a few publications change, a few relationships
are added or removed, a few users change (which affects their publications), and one poll
is counted. Results are printed as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from crisync.lifecycle import Lifecycle
from crisync.listener.base import SourceContext
from crisync.listener.elements.client import ElementsClient
from crisync.listener.elements.config import ElementsConfig
from crisync.listener.elements.feed import ElementsListener, Feed
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.server import serve
from crisync.state.store import Store
from crisync.telemetry import Telemetry

PASSWORD = "bench-elements-secret"
PUBLICATIONS = Feed("publications")


def kinds(requests: list[tuple[str, str]]) -> Counter[str]:
    """Requests by what they asked: feed pages, single objects, relationships."""
    counted: Counter[str] = Counter()
    for _, target in requests:
        path = urlsplit(target).path
        if "relationships" in path:
            counted["relationships"] += 1
        elif path.rstrip("/").split("/")[-1].isdigit():
            counted["objects"] += 1
        else:
            counted["feed_pages"] += 1
    return counted


async def measure(objects: int, detail: str, relationships: bool) -> dict[str, Any]:
    sim = ElementsSimulator(objects=objects, seed=1, password=PASSWORD)
    publications = sim.object_ids("publication")
    per_page = 25 if detail == "full" else 100
    async with (
        serve(sim.app()) as origin,
        aiohttp.ClientSession() as session,
    ):
        with tempfile.TemporaryDirectory() as tmp:
            async with Store.open(Path(tmp) / "state.db") as store:
                settings = ElementsConfig(
                    url=origin + "/secure-api/v5.5",
                    username="crisync",
                    password=PASSWORD,
                    request_gap=0,
                    detail=detail,
                    per_page=per_page,
                    lookback=0,
                    relationships=["publications"] if relationships else [],
                )
                telemetry = Telemetry()
                listener = ElementsListener(
                    settings,
                    ElementsClient(session, settings, telemetry=telemetry),
                    SourceContext(store, session, Lifecycle(), telemetry),
                )
                await listener.sweep(PUBLICATIONS)
                backfill = kinds(sim.requests)

                sim.advance(10)
                users = sim.object_ids("user")
                changed = publications[:: max(1, len(publications) // 10)][:10]
                for publication in changed[:5]:
                    sim.touch("publication", publication)
                for publication, user in zip(changed[5:], users, strict=False):
                    sim.relate(publication, user)
                for user in users[-3:]:
                    sim.touch("user", user)
                sim.advance(10)
                sim.requests.clear()
                result = await listener.sweep(PUBLICATIONS)
                steady = kinds(sim.requests)
    return {
        "detail": detail,
        "relationships_read": relationships,
        "publications": len(publications),
        "backfill_requests": dict(backfill),
        "backfill_requests_per_publication": round(sum(backfill.values()) / len(publications), 3),
        "steady_affected_publications": result.events_added,
        "steady_requests": dict(steady),
        "steady_requests_per_affected_publication": round(
            sum(steady.values()) / max(1, result.events_added), 3
        ),
    }


async def main(objects: int) -> list[dict[str, Any]]:
    return [
        await measure(objects, detail, relationships)
        for detail in ("full", "ref")
        for relationships in (False, True)
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    arguments = parser.parse_args()
    for row in asyncio.run(main(arguments.objects)):
        print(json.dumps(row))
