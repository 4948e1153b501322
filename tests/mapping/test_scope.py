from __future__ import annotations

from typing import Any

import pytest

from crisync.mapping.rules import ObjectMapping
from crisync.mapping.scope import out_of_scope


def mapping(*scope: dict[str, Any]) -> ObjectMapping:
    return ObjectMapping.model_validate({"pure_type": "persons", "scope": list(scope)})


STAFF = {"fields": {"is-current-staff": "true", "groups": ["Physics", "Staff"]}}
FORMER = {"fields": {"is-current-staff": "false", "groups": ["Alumni"]}}


@pytest.mark.parametrize(
    ("rule", "inside", "outside", "why"),
    [
        (
            {"from": "fields.is-current-staff|boolean", "equals": True},
            STAFF,
            FORMER,
            "fields.is-current-staff|boolean is False, not True",
        ),
        (
            {"from": "fields.groups", "in": ["physics"]},
            STAFF,
            FORMER,
            "fields.groups is ['Alumni'], not one of ['physics']",
        ),
        (
            {"from": "fields.groups", "not_in": ["Alumni"]},
            STAFF,
            FORMER,
            "fields.groups is ['Alumni'], one of ['Alumni']",
        ),
        (
            {"from": "fields.date|date", "after": "2020-01-01"},
            {"fields": {"date": {"year": 2021}}},
            {"fields": {"date": {"year": 2019, "month": 12}}},
            "fields.date|date is '2019-12-01', not on or after 2020-01-01",
        ),
        (
            {
                "from": "relationships",
                "where": {"type": "publication-user-authorship", "visible": True},
                "present": True,
            },
            {"relationships": [{"type": "publication-user-authorship", "visible": True}]},
            {"relationships": [{"type": "publication-user-authorship", "visible": False}]},
            "relationships is [], not present",
        ),
        (
            {"from": "fields.doi", "present": True},
            {"fields": {"doi": "10.1/x"}},
            {"fields": {}},
            "fields.doi is absent, not present",
        ),
    ],
)
def test_an_object_is_in_scope_when_every_condition_holds_and_told_why_not(
    rule: dict[str, Any], inside: dict[str, Any], outside: dict[str, Any], why: str
) -> None:
    rules = mapping(rule)
    assert out_of_scope(rules, inside) is None
    assert out_of_scope(rules, outside) == why


def test_a_scope_rule_needs_a_condition() -> None:
    with pytest.raises(ValueError, match="a scope rule needs"):
        mapping({"from": "fields.x"})
