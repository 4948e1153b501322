from __future__ import annotations

from crisync.state import create_intents
from crisync.state.store import Store


async def test_a_second_begin_finds_the_intent_an_earlier_try_left(store: Store) -> None:
    intent = {"target_type": "persons", "id_source": "source", "primary_id": "elements:user:1"}
    assert await create_intents.begin(store, "elements", "user", "1", **intent)
    assert not await create_intents.begin(store, "elements", "user", "1", **intent)
    assert await create_intents.begin(store, "elements", "user", "2", **intent)
    async with store.transaction() as conn:
        await create_intents.remove(conn, ("elements", "user", "1"))
    assert await create_intents.begin(store, "elements", "user", "1", **intent)
