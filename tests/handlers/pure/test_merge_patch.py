"""JSON merge patch as Pure applies it, and the patch between two bodies."""

from __future__ import annotations

import copy
from typing import Any

from crisync.handlers.pure.merge_patch import apply_merge_patch, merge_patch_between

CURRENT: dict[str, Any] = {
    "title": {"value": "On crystals"},
    "abstract": {"en_GB": "Facets.", "da_DK": "Facetter."},
    "identifiers": [{"typeDiscriminator": "PrimaryId", "idSource": "hr", "value": "1"}],
    "customDefinedFields": {
        "grade": {"typeDiscriminator": "String", "value": "A"},
        "note": {"typeDiscriminator": "String", "value": "kept"},
    },
    "bibliographicalNote": {"en_GB": "Theirs"},
}


def patched(patch: dict[str, Any]) -> dict[str, Any]:
    target = copy.deepcopy(CURRENT)
    apply_merge_patch(target, patch)
    return target


def test_absent_stays_null_removes_objects_merge_arrays_replace() -> None:
    result = patched(
        {"abstract": {"da_DK": None, "de_DE": "Kristalle."}, "title": None, "identifiers": []}
    )
    assert result["abstract"] == {"en_GB": "Facets.", "de_DE": "Kristalle."}
    assert "title" not in result
    assert result["identifiers"] == []
    assert result["bibliographicalNote"] == CURRENT["bibliographicalNote"]


def test_a_custom_field_entry_replaces_the_field_and_one_without_value_clears_it() -> None:
    result = patched({"customDefinedFields": {"grade": {"typeDiscriminator": "String"}}})
    assert result["customDefinedFields"] == {
        "grade": {"typeDiscriminator": "String"},
        "note": {"typeDiscriminator": "String", "value": "kept"},
    }


def test_the_patch_between_two_bodies_makes_one_into_the_other() -> None:
    wanted = copy.deepcopy(CURRENT)
    wanted["abstract"] = {"en_GB": "Facets."}
    wanted["title"] = {"value": "On larger crystals"}
    wanted["customDefinedFields"]["grade"] = {"typeDiscriminator": "String"}
    patch = merge_patch_between(CURRENT, wanted)
    assert patch == {
        "abstract": {"da_DK": None},
        "title": {"value": "On larger crystals"},
        "customDefinedFields": {"grade": {"typeDiscriminator": "String"}},
    }
    assert patched(patch) == wanted


def test_no_difference_is_an_empty_patch() -> None:
    assert merge_patch_between(CURRENT, copy.deepcopy(CURRENT)) == {}
