"""A configuration file as an operator writes it, pointing at the test's simulators and broker."""

from __future__ import annotations

from pathlib import Path

from crisync.config.model import Config
from crisync.sim.broker import MosquittoBroker


def write_config(path: Path, config: Config, broker: MosquittoBroker, prefix: str) -> None:
    assert config.elements is not None
    assert config.pure is not None
    path.write_text(f"""
[state]
path = "{config.state.path}"

[daemon]
shutdown_timeout = 10

[elements]
url = "{config.elements.url}"
username = "crisync"
poll_interval = 0.5
request_gap = 0

[pure]
url = "{config.pure.url}"
managing_organization = "{config.pure.managing_organization}"
concurrency = {config.pure.concurrency}
timeout = {config.pure.timeout}

[mqtt]
url = "{broker.url}"
topic_prefix = "{prefix}"
client_id = "daemon-{prefix}"
""")
