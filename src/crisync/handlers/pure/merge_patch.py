"""JSON merge patch (RFC 7386) as Pure applies it to every PUT, and the patch between two bodies.

Absent properties stay, `null` removes, objects merge recursively, arrays replace whole.
One exception, from Pure's custom-defined fields guide: an entry of customDefinedFields
replaces the field whole (an entry without a value clears it), and entries left out stay.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

CUSTOM_FIELDS = "customDefinedFields"


def apply_merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Change `target` in place as Pure does on a PUT of `patch`."""
    for name, value in patch.items():
        if name == CUSTOM_FIELDS and isinstance(value, Mapping):
            entries = target.setdefault(name, {})
            entries.update({field: copy.deepcopy(entry) for field, entry in value.items() if entry})
        else:
            _merge(target, name, value)


def _merge(target: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        target.pop(name, None)
    elif isinstance(value, Mapping):
        existing = target.get(name)
        if not isinstance(existing, dict):
            target[name] = existing = {}
        for inner, inner_value in value.items():
            _merge(existing, inner, inner_value)
    else:
        target[name] = copy.deepcopy(value)


def merge_patch_between(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest patch that makes `current` into `wanted` (top-level absences stay).

    Only properties `wanted` names are compared: a property it leaves out is not crisync's
    to remove. Within an object, a key `current` has and `wanted` lacks becomes `null`.
    """
    patch: dict[str, Any] = {}
    for name, value in wanted.items():
        if name in current and current[name] == value:
            continue
        if name == CUSTOM_FIELDS:
            theirs = current.get(name) or {}
            patch[name] = {
                field: entry for field, entry in (value or {}).items() if theirs.get(field) != entry
            }
        else:
            patch[name] = _difference(current.get(name), value)
    return patch


def _difference(old: Any, new: Any) -> Any:
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    changed: dict[str, Any] = dict.fromkeys(old.keys() - new.keys())
    for key, value in new.items():
        if key not in old or old[key] != value:
            changed[key] = _difference(old.get(key), value)
    return changed
