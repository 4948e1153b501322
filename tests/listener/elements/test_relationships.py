"""Reading an affected object's relationships into its payload, against the simulator."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from crisync.config.model import Config
from crisync.errors import PermanentError
from crisync.listener.elements.feed import Feed
from crisync.listener.elements.sim import ElementsSimulator
from crisync.state import inbox
from crisync.state.store import Store
from tests.support.elements import cursor_of, listener_with, served, simulator

PUBLICATIONS = Feed("publications")


def big_team(sim: ElementsSimulator, members: int) -> tuple[int, list[int]]:
    """A publication with `members` authorship relationships, one of them hidden, and one
    suggestion besides; its id and the users' in relationship order."""
    users = [sim.add_user("Ann", f"Member{n}") for n in range(members)]
    paper = sim.add_publication("Big team", [])
    for n, user in enumerate(users):
        sim.relate(paper, user, visible=n != 1)
    sim.suggest(paper, sim.add_user("Sue", "Suggested"))
    sim.advance(1)
    return paper, users


async def payload_of(store: Store, key: int) -> dict[str, object]:
    async with store.reading() as conn:
        events = await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
    (event,) = [e for e in events if e.key == str(key)]
    return event.payload


async def test_every_page_of_relationships_is_read_politely_into_the_payload(
    store: Store, config: Config, session: aiohttp.ClientSession
) -> None:
    sim = simulator(objects=0)
    paper, users = big_team(sim, 30)
    async with served(sim) as url:
        listener = listener_with(session, config, store, url=url, request_gap=0.05)
        started = time.monotonic()
        await listener.sweep(PUBLICATIONS)
        elapsed = time.monotonic() - started
    asked = [urlsplit(target) for _, target in sim.requests if "relationships" in target]
    # 30 relationships at full detail: two pages of at most 25, no suggestions asked for.
    assert [parse_qs(a.query)["per-page"] for a in asked] == [["25"], ["25"]]
    assert all(parse_qs(a.query)["detail"] == ["full"] for a in asked)
    assert elapsed >= 0.05 * (len(sim.requests) - 1)
    relationships = (await payload_of(store, paper))["relationships"]
    assert isinstance(relationships, list)
    assert [(r["category"], r["id"]) for r in relationships] == [("user", str(u)) for u in users]
    assert [r["visible"] for r in relationships].count(False) == 1
    assert relationships[1] == {
        "relationship": relationships[1]["relationship"],
        "type": "publication-user-authorship",
        "type_id": "8",
        "category": "user",
        "id": str(users[1]),
        "visible": False,
        "claimed": True,
    }


async def test_suggestions_are_read_only_when_configured_and_are_not_claimed(
    store: Store, config: Config, session: aiohttp.ClientSession
) -> None:
    sim = simulator(objects=0)
    paper, _ = big_team(sim, 2)
    async with served(sim) as url:
        await listener_with(session, config, store, url=url, suggestions=True).sweep(PUBLICATIONS)
    relationships = (await payload_of(store, paper))["relationships"]
    assert isinstance(relationships, list)
    assert [r["claimed"] for r in relationships] == [True, True, False]


async def test_a_relationships_request_that_may_pass_is_retried_within_the_page(
    store: Store, config: Config, session: aiohttp.ClientSession, no_backoff: list[float | None]
) -> None:
    sim = simulator(objects=0)
    paper, users = big_team(sim, 2)
    sim.fail_next(504, "database timeout", path="/relationships")
    async with served(sim) as url:
        result = await listener_with(session, config, store, url=url).sweep(PUBLICATIONS)
    assert result.complete
    assert len(no_backoff) == 1
    relationships = (await payload_of(store, paper))["relationships"]
    assert isinstance(relationships, list)
    assert len(relationships) == len(users)


async def test_a_relationships_request_that_fails_for_good_fails_the_page_and_keeps_the_cursor(
    store: Store, config: Config, session: aiohttp.ClientSession, no_backoff: list[float | None]
) -> None:
    sim = simulator(objects=0)
    big_team(sim, 2)
    sim.fail_next(400, "argument fault", path="/relationships")
    async with served(sim) as url:
        with pytest.raises(PermanentError, match="argument fault"):
            await listener_with(session, config, store, url=url).sweep(PUBLICATIONS)
    async with store.reading() as conn:
        assert await inbox.pending_count(conn) == 0
    assert (await cursor_of(store, "elements:publications")).high_water is None


async def test_an_object_gone_before_its_relationships_are_read_gives_no_event(
    store: Store, config: Config, session: aiohttp.ClientSession, no_backoff: list[float | None]
) -> None:
    sim = simulator(objects=0)
    big_team(sim, 1)  # its relationships are asked for first, and it is gone by then
    kept, _ = big_team(sim, 1)
    sim.fail_next(410, "resource deleted", path="/relationships")
    async with served(sim) as url:
        result = await listener_with(session, config, store, url=url).sweep(PUBLICATIONS)
    assert result.complete
    async with store.reading() as conn:
        events = await inbox.claim_ready(conn, busy_keys=[], now="9999", limit=1000)
    assert [(e.kind, e.key) for e in events if e.kind == "publication"] == [
        ("publication", str(kept))
    ]


async def test_categories_whose_relationships_are_read_are_checked(config: Config) -> None:
    assert config.elements is not None
    assert config.elements.relationship_categories == {"publications"}
    users_only = config.elements.model_copy(update={"categories": ["users"]})
    assert users_only.relationship_categories == frozenset()
    with pytest.raises(ValueError, match="relationships of categories that are not read: grants"):
        type(config.elements).model_validate(
            {**config.elements.model_dump(), "password": "x", "relationships": ["grants"]}
        )
