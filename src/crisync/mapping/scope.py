"""Scope: whether a source object is one its mapping replicates, and if not, why."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from crisync.mapping.expressions import first_value, is_empty
from crisync.mapping.rules import ObjectMapping, ScopeRule


def out_of_scope(rules: ObjectMapping, payload: Mapping[str, Any]) -> str | None:
    """Why the object is outside the mapping's scope (its first failed condition), or None."""
    for rule in rules.scope:
        value = first_value(rule.from_, payload)
        if rule.where is not None:
            value = _kept(value, rule.where)
        failed = next(_failures(rule, value), None)
        if failed is not None:
            return f"{' or '.join(rule.from_)} is {_shown(value)}, {failed}"
    return None


def _failures(rule: ScopeRule, value: Any) -> Iterator[str]:
    """What the value fails of the rule's conditions."""
    if rule.present is not None and is_empty(value) == rule.present:
        yield "not present" if rule.present else "present"
    if rule.equals is not None and _comparable(value) != _comparable(rule.equals):
        yield f"not {_shown(rule.equals)}"
    entries = [_comparable(v) for v in (value if isinstance(value, list) else [value])]
    if rule.in_ is not None and not any(e in [_comparable(v) for v in rule.in_] for e in entries):
        yield f"not one of {_shown(rule.in_)}"
    if rule.not_in is not None and any(e in [_comparable(v) for v in rule.not_in] for e in entries):
        yield f"one of {_shown(rule.not_in)}"
    day = value[:10] if isinstance(value, str) else None
    if rule.after is not None and (day is None or day < rule.after):
        yield f"not on or after {rule.after}"
    if rule.before is not None and (day is None or day >= rule.before):
        yield f"not before {rule.before}"


def _kept(value: Any, where: Mapping[str, Any]) -> list[Any]:
    """The list's entries whose fields equal every one of `where`."""
    entries = value if isinstance(value, list) else []
    return [
        entry
        for entry in entries
        if isinstance(entry, dict) and all(entry.get(k) == v for k, v in where.items())
    ]


def _comparable(value: Any) -> Any:
    return value.strip().casefold() if isinstance(value, str) else value


def _shown(value: Any) -> str:
    return "absent" if value is None else repr(value)
