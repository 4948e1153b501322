"""A handler context on a real state database and the Pure simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from crisync.config.model import Config
from crisync.handlers.base import HandlerContext
from crisync.handlers.pure_client import PureClient
from crisync.state.store import Store
from crisync.telemetry import Telemetry


@pytest.fixture
async def context(config: Config) -> AsyncIterator[HandlerContext]:
    assert config.pure is not None
    async with Store.open(config.state.path) as store, aiohttp.ClientSession() as session:
        yield HandlerContext(
            store,
            PureClient(session, config.pure, telemetry=Telemetry()),
            config.pure,
            config.mappings,
        )
