"""Which source objects a Pure object stands for: the PrimaryIds crisync wrote into it.

crisync writes ``source:kind:key`` with the mapping's idSource; an identifier counts only
when its (source, kind) is mapped to the object's Pure type with that idSource, so HR's own
PrimaryIds on a person are never read as crisync's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from crisync.handlers.pure.mapping import id_source_of, parse_primary_id
from crisync.mapping.rules import ObjectMapping


def primary_ids(item: Mapping[str, Any], id_source: str) -> Iterable[str]:
    """The values of the object's PrimaryId identifiers of this idSource."""
    for identifier in item.get("identifiers") or []:
        if (
            isinstance(identifier, dict)
            and identifier.get("typeDiscriminator") == "PrimaryId"
            and identifier.get("idSource") == id_source
            and isinstance(identifier.get("value"), str)
        ):
            yield identifier["value"]


def crisync_keys(
    item: Mapping[str, Any], rules_of: Mapping[tuple[str, str], ObjectMapping]
) -> set[tuple[str, str, str]]:
    """(source, kind, key) of each PrimaryId crisync wrote into the object, given the
    mappings of its Pure type by (source, kind)."""
    keys = set()
    for id_source in {id_source_of(rules) for rules in rules_of.values()}:
        for value in primary_ids(item, id_source):
            parsed = parse_primary_id(value)
            rules = rules_of.get(parsed[:2]) if parsed else None
            if parsed is not None and rules is not None and id_source_of(rules) == id_source:
                keys.add(parsed)
    return keys
