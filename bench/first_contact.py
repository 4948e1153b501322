"""What crisync's first contact with a populated Pure costs, against the same world in an empty one.

    .venv/bin/python bench/first_contact.py --objects 10000 --latency-ms 0 50
    .venv/bin/python bench/first_contact.py --objects 100000 --latency-ms 50 --pure populated

The Pure simulator is seeded as a site's Pure is (`crisync.sim.site`: HR's persons, imported
research outputs with DOIs and Scopus ids, a duplicate DOI); `crisync once` then runs with
the built-in mappings, as a new site starts: users are linked to HR's persons, publications
adopted by DOI or Scopus id or created. The same world against an empty Pure shows what
the matching adds to a plain backfill. Results are printed and written to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from run import (  # the benchmark's harness, beside this file
    ELEMENTS_PASSWORD,
    PURE_API_KEY,
    daemon_command,
    pure_writes,
    wait_with_usage,
    write_config,
)

from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import serve
from crisync.sim.site import populate_site

CONCURRENCY = 8


async def first_contact(
    workdir: Path, broker: MosquittoBroker, *, objects: int, latency_ms: int, populated: bool
) -> dict[str, Any]:
    elements = ElementsSimulator(objects=objects, seed=1, password=ELEMENTS_PASSWORD)
    # Seeding stores in memory, not over HTTP: the latency is crisync's requests' alone.
    pure = PureSimulator(api_key=PURE_API_KEY, seed=1, latency_ms=latency_ms)
    seeded = populate_site(pure, elements) if populated else None
    pure_before = sum(len(pure.objects(t)) for t in ("persons", "research-outputs"))
    pure.request_counts.clear()
    run_dir = Path(tempfile.mkdtemp(prefix=f"first-contact-{objects}-", dir=workdir))
    config = run_dir / "crisync.toml"
    async with serve(elements.app()) as elements_origin, serve(pure.app()) as pure_origin:
        write_config(
            config,
            state=run_dir / "state.db",
            elements_url=f"{elements_origin}/secure-api/v5.5",
            pure_url=f"{pure_origin}/ws/api",
            organization=pure.organization_uuids[0],
            mqtt_url=broker.url,
            prefix=f"firstcontact{objects}",
            concurrency=CONCURRENCY,
            poll_interval=60,
        )
        started = time.monotonic()
        daemon = await wait_with_usage(daemon_command("once", config))
        elapsed = time.monotonic() - started
        requests = dict(sorted((f"{t} {op}", n) for (t, op), n in pure.request_counts.items()))
        total = sum(pure.request_counts.values())
        pure.request_counts.clear()
        await wait_with_usage(daemon_command("once", config))
        second_run_writes = pure_writes(pure)
    pure_after = sum(len(pure.objects(t)) for t in ("persons", "research-outputs"))
    return {
        "objects": objects,
        "populated": populated,
        "latency_ms": latency_ms,
        "exit_status": daemon.status,  # 65: the ambiguous DOI waits as a dead letter
        "seconds": round(elapsed, 1),
        "objects_per_second": round(objects / elapsed, 1),
        "pure_requests": total,
        "pure_requests_per_object": round(total / objects, 3),
        "pure_requests_by_operation": requests,
        "new_persons_and_outputs": pure_after - pure_before,
        "seeded": None if seeded is None else dict(seeded.counts),
        "second_run_pure_writes": second_run_writes,
        "daemon_cpu_ms_per_object": round(daemon.cpu_seconds * 1000 / objects, 2),
        "peak_rss_mb": round(daemon.peak_rss_mb, 1),
    }


async def main(objects: list[int], latencies: list[int], pures: list[str]) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="crisync-first-contact-") as workdir:
        broker = MosquittoBroker(Path(workdir))
        broker.start()
        try:
            for size in objects:
                for latency in latencies:
                    for pure in pures:
                        result = await first_contact(
                            Path(workdir),
                            broker,
                            objects=size,
                            latency_ms=latency,
                            populated=pure == "populated",
                        )
                        print(json.dumps(result), flush=True)
                        results.append(result)
        finally:
            broker.stop()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[10_000])
    parser.add_argument("--latency-ms", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--pure",
        nargs="+",
        choices=("populated", "empty"),
        default=["populated", "empty"],
        help="which Pure to meet: seeded as a site's, or empty (both by default)",
    )
    args = parser.parse_args()
    found = asyncio.run(main(args.objects, args.latency_ms, args.pure))
    out = (
        Path(__file__).parent / "results" / f"first-contact-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    )
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(found, indent=2))
    print(f"written to {out}", file=sys.stderr)
