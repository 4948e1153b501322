"""Shared fixtures: a real broker, the simulators over loopback HTTP, a configuration."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from crisync.config.model import Config, DaemonConfig, MqttConfig
from crisync.handlers.pure.client import PureClient
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.sim import PureSimulator
from crisync.listener.elements.config import ElementsConfig
from crisync.listener.elements.sim import ElementsSimulator
from crisync.listener.unicat.sim import UnicatSimulator
from crisync.sim.broker import MosquittoBroker
from crisync.sim.server import serve
from crisync.state.store import Store
from crisync.telemetry import Telemetry
from tests.support.config_file import write_config
from tests.support.mappings import users_created
from tests.support.secrets import ELEMENTS_PASSWORD, PURE_API_KEY
from tests.support.unicat import UNICAT_API_KEY, UNICAT_PROJECT, unicat_mappings, unicat_settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-full",
        action="store_true",
        help="run the fault suites at full size (5,000 objects, 20 kills, a 30 s broker outage)",
    )


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """A command run in-process configures logging for the process: undo it for the next test."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    running = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker for this test alone, which it may stop and start."""
    running = MosquittoBroker(tmp_path)
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """The test's state database, at the path the `config` fixture names too."""
    async with Store.open(tmp_path / "state.db") as opened:
        yield opened


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
def elements_sim() -> ElementsSimulator:
    return ElementsSimulator(objects=30, seed=7, password=ELEMENTS_PASSWORD)


@pytest.fixture
def pure_sim() -> PureSimulator:
    return PureSimulator(api_key=PURE_API_KEY, seed=7)


@pytest.fixture
async def elements_url(elements_sim: ElementsSimulator) -> AsyncIterator[str]:
    async with serve(elements_sim.app()) as origin:
        yield origin + "/secure-api/v5.5"


@pytest.fixture
async def pure_url(pure_sim: PureSimulator) -> AsyncIterator[str]:
    async with serve(pure_sim.app()) as origin:
        yield origin + "/ws/api"


@pytest.fixture
def topic_prefix() -> str:
    return f"crisync-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def config(
    tmp_path: Path,
    elements_url: str,
    pure_url: str,
    pure_sim: PureSimulator,
    broker: MosquittoBroker,
    topic_prefix: str,
) -> Config:
    """A whole configuration pointing at the simulators and the session's broker."""
    return Config(
        state={"path": tmp_path / "state.db"},
        daemon=DaemonConfig(shutdown_timeout=10, log_format="console"),
        elements=ElementsConfig(
            url=elements_url,
            username="crisync",
            password=ELEMENTS_PASSWORD,
            poll_interval=0.5,
            request_gap=0,
            lookback=60,
        ),
        pure=PureConfig(
            url=pure_url,
            api_key=PURE_API_KEY,
            managing_organization=pure_sim.organization_uuids[0],
            concurrency=4,
        ),
        mqtt=MqttConfig(
            url=broker.url, topic_prefix=topic_prefix, client_id=f"crisync-{topic_prefix}"
        ),
        mappings=users_created(),
    )


@pytest.fixture
async def context(config: Config) -> AsyncIterator[PureContext]:
    """The Pure target's handler context on the test's state database and Pure simulator."""
    assert config.pure is not None
    async with Store.open(config.state.path) as opened, aiohttp.ClientSession() as client:
        yield PureContext(
            opened,
            PureClient(client, config.pure, telemetry=Telemetry()),
            config.pure,
            config.mappings,
        )


@pytest.fixture
def config_path(
    tmp_path: Path,
    config: Config,
    broker: MosquittoBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The `config` fixture as an operator's file, its secrets in the environment."""
    path = tmp_path / "crisync.toml"
    write_config(path, config, broker, topic_prefix)
    monkeypatch.setenv("CRISYNC_ELEMENTS_PASSWORD", ELEMENTS_PASSWORD)
    monkeypatch.setenv("CRISYNC_PURE_API_KEY", PURE_API_KEY)
    return path


@pytest.fixture
def unicat_sim() -> UnicatSimulator:
    return UnicatSimulator(
        project=UNICAT_PROJECT, api_key=UNICAT_API_KEY, records=12, seed=7, page_size=10
    )


@pytest.fixture
async def unicat_url(unicat_sim: UnicatSimulator) -> AsyncIterator[str]:
    async with serve(unicat_sim.app()) as origin:
        yield origin


@pytest.fixture
def unicat_config(config: Config, unicat_url: str, pure_sim: PureSimulator) -> Config:
    """The whole configuration with [unicat] instead of [elements]."""
    settings = unicat_settings(unicat_url)
    mappings = unicat_mappings(pure_sim.organization_uuids[0])
    return config.model_copy(update={"elements": None, "unicat": settings, "mappings": mappings})
