"""Unicat records → Pure content, by the ``[[unicat.mappings]]`` rules.

The first rule whose ``definition`` names the record's definition (by name or gid; ``*``
matches any) decides the Pure type and idSource. The body is the rule's ``static``
properties with each mapped field's value set at its Pure property path: ``fields =
{lastname = "name.lastName"}`` writes the record's ``lastname`` to ``{"name": {"lastName":
…}}``. Fields without a value are left out; Pure's validation reports what it then misses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from crisync.config.model import UnicatMapping
from crisync.errors import PermanentError


@dataclass(frozen=True)
class UnicatTarget:
    pure_type: str
    id_source: str
    body: dict[str, Any]  # the properties crisync owns, identifiers not yet included


def unicat_target(payload: dict[str, Any], mappings: list[UnicatMapping]) -> UnicatTarget:
    if "definition" not in payload or "fields" not in payload:
        # A delete event's payload: it has no body to map, only a delete policy applies.
        raise PermanentError(f"record {payload.get('id')} carries no fields to map", api="crisync")
    definition, definition_gid = payload.get("definition"), payload.get("definition_gid")
    rule = next((rule for rule in mappings if rule.applies_to(definition, definition_gid)), None)
    if rule is None:
        raise PermanentError(
            f"no [[unicat.mappings]] rule for definition {payload.get('definition')!r}",
            api="crisync",
        )
    body = copy.deepcopy(rule.static)
    values = payload.get("fields") or {}
    for field_name, pure_path in rule.fields.items():
        value = values.get(field_name)
        if value is not None and value != "":
            _set_path(body, pure_path, value)
    return UnicatTarget(rule.pure_type, rule.id_source, body)


def _set_path(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = body
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise PermanentError(f"mapping path {path!r} crosses a non-object", api="crisync")
        node = child
    node[leaf] = value
