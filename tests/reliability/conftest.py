"""Fault suites: short by default, the issue's full figures with --reliability-full."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crisync.sim.broker import MosquittoBroker


@dataclass(frozen=True)
class Scale:
    objects: int
    kills: int
    broker_outage_s: float
    fuzz_examples: int


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> Scale:
    if request.config.getoption("--reliability-full"):
        return Scale(objects=5000, kills=20, broker_outage_s=30, fuzz_examples=3000)
    return Scale(objects=400, kills=5, broker_outage_s=3, fuzz_examples=300)


@pytest.fixture
def report(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> Callable[[str], None]:
    """Print a suite's figures on the terminal, whatever pytest captures."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\n[{request.node.name}] {line}")

    return write


@pytest.fixture
def persistent_broker(tmp_path: Path, scale: Scale) -> Iterator[MosquittoBroker]:
    """A broker that keeps sessions and their queued messages across a restart, as
    Debian's mosquitto package does; every outcome of a run may wait in a persistent
    session while its client is away."""
    running = MosquittoBroker(tmp_path, persistence=True, max_queued_messages=2 * scale.objects)
    running.start()
    yield running
    running.stop()
