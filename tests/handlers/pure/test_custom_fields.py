"""Custom-defined fields: only the named ones are written; an empty value clears one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from crisync.errors import PermanentError
from crisync.handlers.pure.context import PureContext
from crisync.handlers.pure.replicate import replicate_to_pure
from crisync.handlers.pure.sim import PureSimulator
from crisync.mapping.rules import MappingsConfig
from tests.handlers.pure.helpers import replicate_next
from tests.support.events import claim_one, enqueue, publication
from tests.support.secrets import PURE_API_KEY

FIELDS = {
    "funded": "Boolean",
    "grant-code": "String",
    "review-date": "Date",
    "apc": "Decimal",
    "oa-status": "Classification",
    "editor-note": "String",  # not in the mapping: people's to fill in
}


@pytest.fixture
def pure_sim() -> PureSimulator:
    return PureSimulator(
        api_key=PURE_API_KEY, seed=7, custom_defined_fields={"research-outputs": FIELDS}
    )


@pytest.fixture
def ctx(context: PureContext) -> PureContext:
    publication_mapping = context.mappings.sources["elements"]["publication"].model_dump()
    publication_mapping["custom_fields"] = {
        "funded": {"type": "Boolean", "from": "fields.funded"},
        "grant-code": {"type": "String", "from": "fields.grant-code"},
        "review-date": {"type": "Date", "from": "fields.reviewed"},
        "apc": {"type": "Decimal", "from": "fields.apc"},
        "oa-status": {"type": "Classification", "from": "fields.oa", "lookup": "oa"},
    }
    mappings = MappingsConfig.model_validate(
        {
            "lookups": {"oa": {"gold": "/dk/atira/pure/oa/gold"}},
            "elements": {"publication": publication_mapping},
        }
    )
    return replace(context, mappings=mappings)


def custom(pure_sim: PureSimulator, uuid: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = pure_sim.objects("research-outputs")[uuid or ""]["customDefinedFields"]
    return fields


async def test_named_fields_are_written_typed_and_an_empty_one_is_cleared(
    ctx: PureContext, pure_sim: PureSimulator
) -> None:
    values = {
        "funded": "true",
        "grant-code": "EP/X1",
        "reviewed": {"year": 2025, "month": 2, "day": 3},
        "apc": "1250.50",
        "oa": "Gold",
    }
    await enqueue(ctx.store, publication("7", "On crystals", **values))
    uuid = (await replicate_next(ctx)).target_uuid
    assert custom(pure_sim, uuid) == {
        "funded": {"typeDiscriminator": "Boolean", "value": True},
        "grant-code": {"typeDiscriminator": "String", "value": "EP/X1"},
        "review-date": {"typeDiscriminator": "Date", "value": "2025-02-03"},
        "apc": {"typeDiscriminator": "Decimal", "value": 1250.5},
        "oa-status": {
            "typeDiscriminator": "Classification",
            "value": {"uri": "/dk/atira/pure/oa/gold"},
        },
        "editor-note": {"typeDiscriminator": "String"},
    }
    note = {"typeDiscriminator": "String", "value": "checked by the library"}
    pure_sim.edit("research-outputs", uuid or "", {"customDefinedFields": {"editor-note": note}})

    changed = {**values, "funded": "no", "grant-code": ""}
    await enqueue(ctx.store, publication("7", "On crystals", 5, **changed))
    assert (await replicate_next(ctx)).action == "updated"
    fields = custom(pure_sim, uuid)
    assert fields["funded"] == {"typeDiscriminator": "Boolean", "value": False}
    assert fields["grant-code"] == {"typeDiscriminator": "String"}
    assert fields["editor-note"] == note
    assert fields["apc"]["value"] == 1250.5


async def test_a_value_of_the_wrong_type_is_refused_before_pure_sees_it(
    ctx: PureContext, pure_sim: PureSimulator
) -> None:
    await enqueue(ctx.store, publication("7", "On crystals", apc="a lot"))
    with pytest.raises(PermanentError, match="custom-defined field apc: 'a lot' is no Decimal"):
        await replicate_to_pure(await claim_one(ctx.store), ctx)
    # Pure was only read (the article's journal), never written.
    assert {op for _, op in pure_sim.request_counts} <= {"search"}
