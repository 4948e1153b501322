"""The built-in mappings of the other Elements categories write what the Pure contract accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from crisync.errors import PermanentError
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.replicate import replicate_to_pure
from crisync.handlers.pure.sim import PureSimulator
from crisync.state.inbox import ChangeEvent
from tests.handlers.pure.helpers import replicate_next
from tests.support.events import claim_one, enqueue


def elements_object(kind: str, key: str, fields: dict[str, Any]) -> ChangeEvent:
    return ChangeEvent(
        f"elements:{kind}",
        "elements",
        kind,
        key,
        "upsert",
        datetime(2026, 11, 1, 12, tzinfo=UTC),
        {"id": key, "category": kind, "attributes": {"type": "department"}, "fields": fields},
    )


DATES = {
    "start-date": {"year": 2024, "month": 1, "day": 15},
    "end-date": {"year": 2027, "month": 12},
}


@pytest.mark.parametrize(
    ("kind", "fields", "pure_type", "expected"),
    [
        (
            "grant",
            {"title": "Crystal growth", **DATES},
            "awards",
            {
                "typeDiscriminator": "BasicAward",
                "title": {"en_GB": "Crystal growth"},
                "awardDate": "2024-01-15",
                "actualPeriod": {"startDate": "2024-01-15", "endDate": "2027-12-01"},
            },
        ),
        (
            "project",
            {"title": "Crystals for all", **DATES},
            "projects",
            {
                "typeDiscriminator": "BasicProject",
                "title": {"en_GB": "Crystals for all"},
                "period": {"startDate": "2024-01-15", "endDate": "2027-12-01"},
            },
        ),
        (
            "org-structure",
            {"name": "Physics", "start-date": {"year": 1950}},
            "organizations",
            {
                "name": {"en_GB": "Physics"},
                "type": {
                    "uri": "/dk/atira/pure/organisation/organisationtypes/organisation/department"
                },
                "lifecycle": {"startDate": "1950-01-01"},
            },
        ),
    ],
)
async def test_each_category_becomes_valid_locked_pure_content(
    context: PureContext,
    pure_sim: PureSimulator,
    kind: str,
    fields: dict[str, Any],
    pure_type: str,
    expected: dict[str, Any],
) -> None:
    await enqueue(context.store, elements_object(kind, "3", fields))
    result = await replicate_next(context)
    assert (result.action, result.target_type) == ("created", pure_type)
    stored = pure_sim.objects(pure_type)[result.target_uuid or ""]
    assert {name: stored[name] for name in expected} == expected
    assert stored["identifiers"][0]["value"] == f"elements:{kind}:3"
    assert pure_sim.is_locked(pure_type, result.target_uuid or "")


async def test_equipment_needs_a_pure_api_newer_than_the_contract(
    context: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(context.store, elements_object("equipment", "3", {"title": "Microscope"}))
    with pytest.raises(PermanentError) as caught:
        await replicate_to_pure(await claim_one(context.store), context)
    assert caught.value.status == 404
    assert pure_sim.request_counts == {}
