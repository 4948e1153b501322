"""The scans' compact index: every uuid of a value, in scan order, and nothing for others."""

from __future__ import annotations

import tracemalloc
import uuid as uuid_module

import pytest

from crisync.errors import PermanentError
from crisync.handlers.pure.compact_index import CompactIndex


def _uuid(n: int) -> str:
    return str(uuid_module.UUID(int=n, version=4))


def test_each_value_finds_its_uuids_in_the_order_they_were_added() -> None:
    index = CompactIndex()
    for n in range(2000):
        index.add(f"10.1000/{n % 1500}", _uuid(n))  # 500 values are shared by two objects
    assert len(index) == 2000
    assert index.get("10.1000/7") == [_uuid(7), _uuid(1507)]
    assert index.get("10.1000/1499") == [_uuid(1499)]
    assert index.get("10.1000/1500") == []
    index.add("10.1000/1500", _uuid(9999))  # added after a lookup: found too
    assert index.get("10.1000/1500") == [_uuid(9999)]


def test_cleared_it_finds_nothing() -> None:
    index = CompactIndex()
    index.add("a", _uuid(1))
    index.clear()
    assert (len(index), index.get("a")) == (0, [])


def test_a_uuid_that_is_not_one_is_a_bad_answer_from_pure() -> None:
    with pytest.raises(PermanentError, match="not-a-uuid"):
        CompactIndex().add("a", "not-a-uuid")


def test_an_entry_costs_tens_of_bytes_not_hundreds() -> None:
    tracemalloc.start()
    try:
        index = CompactIndex()
        for n in range(100_000):
            index.add(f"10.1000/journal.{n}", _uuid(n))
        index.get("10.1000/journal.1")  # sorted: the index as lookups see it
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / 100_000 < 40
