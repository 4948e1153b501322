"""Unicat records → Pure bodies by the [[unicat.mappings]] rules."""

from __future__ import annotations

from typing import Any

import pytest

from crisync.config.model import UnicatMapping
from crisync.errors import PermanentError
from crisync.handlers.pure_mapping import to_pure
from crisync.handlers.unicat_mapping import unicat_target
from crisync.state.inbox import InboxEvent
from tests.support.unicat import record_mappings, unicat_settings

ORGANIZATION = "9b0c6a1e-2f3d-4c5b-8a7e-6d5c4b3a2f10"


def payload(definition: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "6f1d2c3b-4a59-4e68-9d7c-1b2a3c4d5e6f",
        "definition": definition,
        "definition_gid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "language": "en",
        "fields": fields,
    }


def test_a_person_rule_sets_each_field_at_its_path() -> None:
    target = unicat_target(
        payload("person", firstname="Zoë", lastname="de Vries", email="z@x.nl"),
        record_mappings(ORGANIZATION),
    )
    assert (target.pure_type, target.id_source) == ("persons", "synchronisedUnifiedPerson")
    assert target.body == {"name": {"firstName": "Zoë", "lastName": "de Vries"}}


def test_static_properties_come_first_and_stay_unshared() -> None:
    rules = record_mappings(ORGANIZATION)
    target = unicat_target(payload("publication", title="Peat soils"), rules)
    assert target.pure_type == "research-outputs"
    assert target.body["title"] == {"value": "Peat soils"}
    assert target.body["managingOrganization"]["uuid"] == ORGANIZATION
    target.body["contributors"].append("changed")
    assert rules[1].static["contributors"] == []


def test_empty_values_are_left_out() -> None:
    target = unicat_target(
        payload("person", firstname="", lastname="Bakker"), record_mappings(ORGANIZATION)
    )
    assert target.body == {"name": {"lastName": "Bakker"}}


def test_rules_match_by_name_gid_or_star_first_one_wins() -> None:
    by_gid = UnicatMapping(definition="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", pure_type="a")
    anything = UnicatMapping(definition="*", pure_type="b")
    assert unicat_target(payload("x"), [by_gid, anything]).pure_type == "a"
    assert unicat_target(payload("x"), [anything, by_gid]).pure_type == "b"


def test_no_rule_or_a_path_through_a_value_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match=r"no \[\[unicat\.mappings\]\] rule"):
        unicat_target(payload("folder"), record_mappings(ORGANIZATION))
    with pytest.raises(PermanentError, match="carries no fields"):
        unicat_target({"id": "gone"}, [UnicatMapping(definition="*")])  # a delete's payload
    clash = UnicatMapping(definition="*", fields={"a": "name", "b": "name.first"})
    with pytest.raises(PermanentError, match="crosses a non-object"):
        unicat_target(payload("x", a="A", b="B"), [clash])


async def test_to_pure_gives_unicat_records_their_primary_id(config: Any) -> None:
    event = InboxEvent(
        1,
        "unicat:p",
        "unicat",
        "record",
        "6f1d2c3b-4a59-4e68-9d7c-1b2a3c4d5e6f",
        "upsert",
        "2026-11-22T08:00:00.000000+00:00",
        "2026-11-22T08:00:01.000000+00:00",
        payload("person", lastname="Jansen"),
        0,
    )
    unicat = unicat_settings("https://unicat.app", ORGANIZATION)
    # Unicat records never ask for references: their rules name no other content.
    no_references: Any = None
    organization = config.pure.managing_organization
    target = await to_pure(
        event,
        config.mappings,
        no_references,
        managing_organization=organization,
        unicat=unicat.mappings,
    )
    assert target.primary_id == "unicat:record:6f1d2c3b-4a59-4e68-9d7c-1b2a3c4d5e6f"
    assert target.body["identifiers"] == [
        {
            "typeDiscriminator": "PrimaryId",
            "idSource": "synchronisedUnifiedPerson",
            "value": target.primary_id,
        }
    ]
    with pytest.raises(PermanentError):
        # Without [unicat] there is no rule to follow.
        await to_pure(event, config.mappings, no_references, managing_organization=organization)
