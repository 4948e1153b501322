"""What crisync knows of Pure's content types, kept to the contract it is built from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from crisync.handlers.pure.openapi import PureContract
from crisync.handlers.pure.types import CLASS_REQUIRES

CONTRACT = PureContract.load()
SCHEMAS: Mapping[str, Any] = CONTRACT.document["components"]["schemas"]
OUTPUT_CLASSES = sorted(SCHEMAS["ResearchOutput"]["discriminator"]["mapping"])


def demanded(name: str) -> set[str]:
    """The properties a request body of this component must carry: the `required` of it and
    of its allOf members, bases included, less those only the server writes."""
    return _required(SCHEMAS[name]) - CONTRACT.read_only_properties(name)


def _required(schema: Mapping[str, Any]) -> set[str]:
    if "$ref" in schema:
        return _required(SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]])
    found = set(schema.get("required", ()))
    for member in schema.get("allOf", ()):
        found |= _required(member)
    return found


@pytest.mark.parametrize("output_class", OUTPUT_CLASSES)
def test_what_a_research_output_class_requires_beyond_every_output_is_class_requires(
    output_class: str,
) -> None:
    beyond = demanded(output_class) - demanded("ResearchOutput")
    assert beyond == set(CLASS_REQUIRES.get(output_class, ()))


def test_class_requires_names_only_research_output_classes() -> None:
    assert set(CLASS_REQUIRES) <= set(OUTPUT_CLASSES)
    # The classes with requirements of their own are there to be checked at all.
    assert {"ContributionToJournal", "ContributionToBookAnthology"} <= set(OUTPUT_CLASSES)
