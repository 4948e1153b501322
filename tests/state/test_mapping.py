from __future__ import annotations

from crisync.state import mapping
from crisync.state.mapping import MappingRow
from crisync.state.store import Store

ROW = MappingRow(
    "unicat",
    "thesis",
    "g1",
    "pure",
    "research-outputs",
    "0b6a-uuid",
    "v1",
    bytes(range(16)),
    locked=True,
    changed_at="2026-11-01T12:00:00.123456+00:00",
    written=b"\x01" * 8,
    foreign_identifiers=({"idSource": "hr", "value": "9"},),
)


async def test_a_row_comes_back_as_it_was_put(store: Store) -> None:
    async with store.transaction() as conn:
        await mapping.put(conn, ROW)
    async with store.reading() as conn:
        assert await mapping.get(conn, "unicat", "thesis", "g1") == ROW


async def test_the_kind_of_a_key_is_found_among_the_kinds_named_through_the_primary_key(
    store: Store,
) -> None:
    async with store.transaction() as conn:
        await mapping.put(conn, ROW)
    async with store.reading() as conn:
        found = await mapping.kind_of(conn, "unicat", ["book", "thesis"], "g1")
        other = await mapping.kind_of(conn, "unicat", ["book"], "g1")
        plan = [
            row[3]
            for row in await conn.execute_fetchall(
                f"EXPLAIN QUERY PLAN {mapping.KIND_OF}", ("unicat", '["book"]', "g1")
            )
        ]
    assert (found, other) == ("thesis", None)
    assert any(
        "USING COVERING INDEX sqlite_autoindex_mapping_1 (source=? AND kind=? AND key=?)" in step
        for step in plan
    ), plan
