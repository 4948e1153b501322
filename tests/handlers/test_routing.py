"""Routes come from the mappings and the sources, never from a hand-written list."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
import pytest

from crisync.config.model import Config
from crisync.errors import PermanentError
from crisync.handlers.base import HandlerResult
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.target import PureTarget
from crisync.handlers.routing import route
from crisync.lifecycle import Lifecycle
from crisync.listener.base import SourceContext
from crisync.listener.elements.config import CATEGORY_OF_FEED
from crisync.listener.elements.source import ElementsSource
from crisync.listener.elements.writeback import WRITEBACK_SOURCE
from crisync.telemetry import Telemetry
from tests.support.events import claim_one, enqueue, publication


async def test_every_mapped_kind_goes_to_its_target_and_others_fail_for_good(
    context: PureContext,
) -> None:
    target = PureTarget(context)
    routes = route(context.mappings, {"pure": target}, [])
    assert set(routes.handlers) == {(source, kind) for source, kind, _ in context.mappings.all()}
    assert ("elements", "teaching-activity") not in routes.handlers
    await enqueue(context.store, publication("7", "On crystals"))
    event = await claim_one(context.store)
    assert routes.handler(event) == target.handle
    unmapped = replace(event, kind="teaching-activity")
    with pytest.raises(PermanentError, match="no mapping for elements teaching-activity"):
        await routes.handler(unmapped)(unmapped)


async def test_a_source_adds_its_own_handlers_and_the_work_a_create_calls_for(
    config: Config, context: PureContext, session: aiohttp.ClientSession
) -> None:
    assert config.elements is not None
    settings = config.elements.model_copy(
        update={"writeback": {"publications": {"source": "manual", "field": "c-pure-id"}}}
    )
    source = ElementsSource(
        settings, SourceContext(context.store, session, Lifecycle(), Telemetry())
    )
    routes = route(context.mappings, {"pure": PureTarget(context)}, [source])
    assert {(WRITEBACK_SOURCE, kind) for kind in CATEGORY_OF_FEED.values()} <= set(routes.handlers)
    await enqueue(context.store, publication("7", "On crystals"))
    event = await claim_one(context.store)
    created = HandlerResult("created", "research-outputs", "u-1", mapping=None)
    [write_back] = routes.follow_ups(event, created)
    assert (write_back.source, write_back.kind, write_back.key) == (
        WRITEBACK_SOURCE,
        "publication",
        "7",
    )
    assert write_back.payload["pure"] == {"type": "research-outputs", "uuid": "u-1"}
    updated = HandlerResult("updated", "research-outputs", "u-1", mapping=None)
    assert routes.follow_ups(event, updated) == ()
