"""Unicat records → Pure bodies, through [mappings.unicat.<definition>] like any source object."""

from __future__ import annotations

from typing import Any

import pytest

from crisync.errors import PermanentError
from crisync.handlers.pure.mapping import to_pure
from crisync.state.inbox import InboxEvent
from tests.support.unicat import unicat_mappings

ORGANIZATION = "9b0c6a1e-2f3d-4c5b-8a7e-6d5c4b3a2f10"
GID = "6f1d2c3b-4a59-4e68-9d7c-1b2a3c4d5e6f"
# Unicat records never ask for references: their mappings name no other content.
NO_REFERENCES: Any = None


def record(kind: str, **fields: Any) -> InboxEvent:
    payload = {
        "id": GID,
        "definition": kind,
        "definition_gid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "language": "en",
        "fields": fields,
    }
    return InboxEvent(
        1,
        "unicat:p",
        "unicat",
        kind,
        GID,
        "upsert",
        "2026-11-22T08:00:00.000000+00:00",
        "2026-11-22T08:00:01.000000+00:00",
        payload,
        0,
    )


async def test_a_person_gets_its_fields_and_the_primary_id_of_its_kind() -> None:
    event = record("person", firstname="Zoë", lastname="de Vries", email="z@x.nl")
    content = await to_pure(
        event, unicat_mappings(ORGANIZATION), NO_REFERENCES, managing_organization=ORGANIZATION
    )
    assert (content.pure_type, content.id_source) == ("persons", "synchronisedUnifiedPerson")
    assert content.primary_id == f"unicat:person:{GID}"
    assert content.body == {
        "name": {"firstName": "Zoë", "lastName": "de Vries"},
        "identifiers": [
            {
                "typeDiscriminator": "PrimaryId",
                "idSource": "synchronisedUnifiedPerson",
                "value": content.primary_id,
            }
        ],
    }


async def test_constant_properties_are_copies_and_empty_values_are_left_out() -> None:
    mappings = unicat_mappings(ORGANIZATION)
    output = await to_pure(
        record("publication", title="Peat soils"),
        mappings,
        NO_REFERENCES,
        managing_organization=ORGANIZATION,
    )
    assert output.pure_type == "research-outputs"
    assert output.body["title"] == {"value": "Peat soils"}
    assert output.body["managingOrganization"]["uuid"] == ORGANIZATION
    output.body["contributors"].append("changed")
    publication = mappings.for_kind("unicat", "publication")
    assert publication is not None
    assert publication.properties["contributors"].value == []
    person = await to_pure(
        record("person", firstname="", lastname="Bakker"),
        mappings,
        NO_REFERENCES,
        managing_organization=ORGANIZATION,
    )
    assert person.body["name"] == {"lastName": "Bakker"}


async def test_a_kind_without_a_mapping_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="no Pure mapping for unicat folder"):
        await to_pure(
            record("folder"),
            unicat_mappings(ORGANIZATION),
            NO_REFERENCES,
            managing_organization=ORGANIZATION,
        )
