"""crisync soak: a running daemon in steady state for a long while; does anything grow?

    .venv/bin/python bench/soak.py                  # an hour, as issue 17 asks
    .venv/bin/python bench/soak.py --minutes 10     # a shorter look (samples every 30 s)

`crisync run` (a child process, as an operator starts it) first replicates `--objects` new
Elements objects into Pure; then, for `--minutes`, an Elements object changes every few
seconds, the broker is stopped for BROKER_DOWN_S at BROKER_AT of the run and Pure refuses
connections for PURE_DOWN_S at PURE_AT. Every `--sample-every` seconds (default 60; a
twentieth of the run when that is shorter) it samples the daemon's resident memory (VmRSS),
its open file descriptors (/proc/PID/fd), the state database's size (with its -wal file)
and inbox rows, and the outbox depth, the backlog and the daemon's asyncio tasks (from its
/metrics).

The figures are the least squares slope of each per hour, over the samples outside the
outages and the minute after each, and a verdict: flat when the slopes of memory,
descriptors, tasks, outbox and backlog are within their tolerances. The state database is not
judged so: it keeps each processed change a day (to drop the feeds' repeats), so it grows
for a day.
Results are written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.sim import ElementsSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import free_port, serve

# bench/ is not a package: run.py beside this file is its sibling script.
sys.path.insert(0, str(Path(__file__).parent))
from run import ELEMENTS_PASSWORD, PURE_API_KEY, daemon_command, subscriber, write_config

PREFIX = "soak"
BROKER_DOWN_S = 10.0
PURE_DOWN_S = 30.0
# Samples this long after an outage ended, or during it, show the outage and the catching
# up, not a trend: the slopes leave them out (they are in the results all the same).
RECOVERY_S = 60.0
BROKER_AT, PURE_AT = 0.4, 0.6  # of the run
# The steady state begins this long after the first replication's outcomes all arrived:
# its last outcomes leave the outbox and its connections settle first.
WARM_UP_S = 60.0
CHANGE_EVERY_S = 3.0  # on average; each gap is drawn between half and one and a half of it
# What a slope per hour may be and still count as flat.
# Open descriptors swing by a few with the HTTP connections kept open (up to
# [pure] concurrency); a leak of one per change or per reconnect is far more.
# Tasks come and go with the requests under way (one per handler at most); a leak of one
# per change or per reconnect is far more.
TOLERANCE_PER_HOUR = {
    "rss_mb": 5.0,
    "open_fds": 10.0,
    "asyncio_tasks": 10.0,
    "outbox_depth": 5.0,
    "backlog": 5.0,
}
# Reported, not judged: within a day the state database grows by the inbox rows of the
# changes it processed, which it keeps a day (then prunes) to drop the feeds' repeats.
GROWING_FOR_A_DAY = ("state_mb", "inbox_rows")


@dataclass(frozen=True)
class Sample:
    minutes: float  # since the steady state began
    rss_mb: float
    open_fds: int
    asyncio_tasks: float  # alive on the daemon's loop, its /metrics scrape's own included
    state_mb: float
    inbox_rows: int  # processed changes are kept a day, to drop feed repeats
    outbox_depth: float
    backlog: float
    disturbed: bool  # taken during an outage or the RECOVERY_S after it


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def state_mb(state: Path) -> float:
    files = (state, state.with_name(f"{state.name}-wal"))
    return sum(path.stat().st_size for path in files if path.exists()) / 2**20


async def metric_sums(
    session: aiohttp.ClientSession, url: str, names: tuple[str, ...]
) -> list[float]:
    """Each named family's samples added up (over their labels), from the exposition."""
    async with session.get(url) as response:
        text = await response.text()
    sums = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.partition("{")[0].partition(" ")[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return [sums[name] for name in names]


def disturbed(seconds: float, duration: float) -> bool:
    """Whether an instant of the run lies in an outage or the recovery after it."""
    outages = ((BROKER_AT * duration, BROKER_DOWN_S), (PURE_AT * duration, PURE_DOWN_S))
    return any(start <= seconds <= start + down + RECOVERY_S for start, down in outages)


def inbox_rows(state: Path) -> int:
    """Events the inbox holds, waiting or done (a done one is kept a day, as a compact
    record), read beside the running daemon (WAL lets a reader in)."""
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as conn:
        query = "SELECT (SELECT COUNT(*) FROM inbox) + (SELECT COUNT(*) FROM inbox_done)"
        return int(conn.execute(query).fetchone()[0])


def open_fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


@dataclass(frozen=True)
class Watched:
    """The running daemon and what a sample reads of it."""

    pid: int
    state: Path
    metrics: str  # its /metrics URL
    started: float  # time.monotonic() as the steady state began
    duration: float  # of the steady state, in seconds

    async def sample(self, session: aiohttp.ClientSession) -> Sample:
        outbox, backlog, tasks = await metric_sums(
            session,
            self.metrics,
            ("crisync_outbox_messages", "crisync_backlog_events", "crisync_asyncio_tasks"),
        )
        return Sample(
            minutes=round(minutes_since(self.started), 2),
            rss_mb=round(resident_mb(self.pid), 1),
            open_fds=open_fds(self.pid),
            asyncio_tasks=tasks,
            state_mb=round(state_mb(self.state), 3),
            inbox_rows=inbox_rows(self.state),
            outbox_depth=outbox,
            backlog=backlog,
            disturbed=disturbed(time.monotonic() - self.started, self.duration),
        )


def slope_per_hour(samples: list[Sample], figure: str) -> float:
    hours = [s.minutes / 60 for s in samples]
    values = [float(getattr(s, figure)) for s in samples]
    return statistics.linear_regression(hours, values).slope


@dataclass
class PureServer:
    """The Pure simulator on a port of its own, so that it can go away and come back."""

    pure: PureSimulator
    port: int = field(default_factory=free_port)
    serving: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ws/api"

    async def up(self) -> None:
        await self.serving.enter_async_context(serve(self.pure.app(), self.port))

    async def down(self) -> None:
        """Connections are refused until `up`."""
        await self.serving.aclose()


async def change_elements(elements: ElementsSimulator, rng: random.Random, until: float) -> int:
    """An Elements object changes every few seconds until `until`; how many changes."""
    publications, users = elements.object_ids("publication"), elements.object_ids("user")
    changes = 0
    while time.monotonic() < until:
        elements.advance(1)
        if rng.random() < 0.8:
            elements.touch("publication", rng.choice(publications))
        else:
            elements.touch("user", rng.choice(users))
        changes += 1
        await asyncio.sleep(rng.uniform(0.5, 1.5) * CHANGE_EVERY_S)
    return changes


async def disturbances(
    broker: MosquittoBroker,
    pure: PureServer,
    started: float,
    duration: float,
) -> list[str]:
    """The broker stopped at BROKER_AT of the run, Pure's port closed at PURE_AT; what
    happened."""
    events = []
    await asyncio.sleep(max(0.0, started + BROKER_AT * duration - time.monotonic()))
    events.append(f"broker stopped for {BROKER_DOWN_S:g} s at {minutes_since(started):.1f} min")
    broker.stop()
    await asyncio.sleep(BROKER_DOWN_S)
    broker.start()
    await asyncio.sleep(max(0.0, started + PURE_AT * duration - time.monotonic()))
    events.append(
        f"Pure refused connections for {PURE_DOWN_S:g} s at {minutes_since(started):.1f} min"
    )
    await pure.down()
    await asyncio.sleep(PURE_DOWN_S)
    await pure.up()
    return events


def minutes_since(started: float) -> float:
    return (time.monotonic() - started) / 60


async def soak(minutes: float, sample_every: float, objects: int) -> dict[str, Any]:
    rng = random.Random(3)
    elements = ElementsSimulator(objects=objects, seed=3, password=ELEMENTS_PASSWORD)
    pure = PureSimulator(api_key=PURE_API_KEY, seed=3)
    pure_server, metrics_port = PureServer(pure), free_port()
    duration = minutes * 60
    with tempfile.TemporaryDirectory(prefix="crisync-soak-") as tmp:
        workdir = Path(tmp)
        broker = MosquittoBroker(workdir)
        broker.start()
        state = workdir / "state.db"
        config = workdir / "crisync.toml"
        async with contextlib.AsyncExitStack() as running:
            running.callback(broker.stop)
            elements_origin = await running.enter_async_context(serve(elements.app()))
            await pure_server.up()
            running.push_async_callback(pure_server.down)
            outcomes = await running.enter_async_context(subscriber(broker.port, PREFIX))
            session = await running.enter_async_context(aiohttp.ClientSession())
            write_config(
                config,
                state=state,
                elements_url=f"{elements_origin}/secure-api/v5.5",
                pure_url=pure_server.url,
                organization=pure.organization_uuids[0],
                mqtt_url=broker.url,
                prefix=PREFIX,
                concurrency=8,
                poll_interval=5,
            )
            with config.open("a") as config_file:
                config_file.write(f"\n[metrics]\nport = {metrics_port}\n")
            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            daemon = daemon_command("run", config)
            running.callback(daemon.wait, 30)
            running.callback(daemon.terminate)
            async with asyncio.timeout(600):
                while outcomes.total < objects:
                    outcomes.changed.clear()
                    await outcomes.changed.wait()
            await asyncio.sleep(WARM_UP_S)

            started = time.monotonic()
            changing = asyncio.create_task(
                change_elements(elements, rng, started + duration), name="changes"
            )
            disturbing = asyncio.create_task(
                disturbances(broker, pure_server, started, duration),
                name="disturbances",
            )
            watched = Watched(daemon.pid, state, metrics, started, duration)
            samples: list[Sample] = []
            for number in range(int(duration // sample_every) + 1):
                await asyncio.sleep(max(0.0, started + number * sample_every - time.monotonic()))
                samples.append(await watched.sample(session))
                print(json.dumps(asdict(samples[-1])), flush=True)
            changes, events = await changing, await disturbing
            if daemon.poll() is not None:
                raise RuntimeError(f"crisync run exited {daemon.returncode} during the soak")
    steady = [s for s in samples if not s.disturbed]
    slopes = {
        figure: slope_per_hour(steady, figure)
        for figure in (*TOLERANCE_PER_HOUR, *GROWING_FOR_A_DAY)
    }
    flat = {figure: abs(slopes[figure]) <= limit for figure, limit in TOLERANCE_PER_HOUR.items()}
    return {
        "minutes": minutes,
        "sample_every_s": sample_every,
        "objects": objects,
        "changes": changes,
        "outcomes": dict(outcomes.by_action),
        "events": events,
        "samples": [asdict(s) for s in samples],
        "steady_samples": len(steady),
        "tolerance_per_hour": TOLERANCE_PER_HOUR,
        "slopes_per_hour": {figure: round(value, 3) for figure, value in slopes.items()},
        "flat": flat,
        "state_kb_per_inbox_row": round(slopes["state_mb"] * 1024 / slopes["inbox_rows"], 2)
        if slopes["inbox_rows"]
        else None,
        "verdict": "flat" if all(flat.values()) else "not flat",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60, help="steady state (default 60)")
    parser.add_argument("--sample-every", type=float, default=None, help="seconds between samples")
    parser.add_argument("--objects", type=int, default=1000, help="replicated first")
    parser.add_argument("--out", type=Path, default=None, help="where the JSON goes")
    arguments = parser.parse_args()
    every = arguments.sample_every or min(60.0, arguments.minutes * 60 / 20)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = arguments.out or Path("bench/results") / f"soak-{stamp}.json"
    figures = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"bench/soak.py --minutes {arguments.minutes:g} --objects {arguments.objects}",
        **asyncio.run(soak(arguments.minutes, every, arguments.objects)),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("slopes_per_hour", "verdict")}))
    print(f"results: {target}")
