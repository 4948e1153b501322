"""What crisync last wrote, as digests, and the patch a change makes of it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crisync.handlers.pure.last_write import DIGEST_BYTES, changed_patch, property_digests
from crisync.handlers.pure.mapping import PureContent

OURS = {"typeDiscriminator": "PrimaryId", "idSource": "synchronisedProject", "value": "e:p:1"}
THEIRS = {"typeDiscriminator": "PrimaryId", "idSource": "scopus", "value": "85000"}


def project(**body: Any) -> PureContent:
    return PureContent(
        "projects",
        "synchronisedProject",
        "e:p:1",
        {"typeDiscriminator": "BasicProject", "identifiers": [OURS], **body},
        owned=frozenset({"typeDiscriminator", "title", "period"}),
        paths=("typeDiscriminator", "title.en_GB", "period.startDate", "period.endDate"),
    )


BEFORE = project(
    title={"en_GB": "Crystals"}, period={"startDate": "2020-01-01", "endDate": "2024-12-31"}
)


def test_one_digest_per_owned_property_absent_ones_included() -> None:
    assert len(property_digests(BEFORE)) == 4 * DIGEST_BYTES
    assert len(property_digests(project())) == 4 * DIGEST_BYTES


def test_nothing_changed_is_an_empty_patch() -> None:
    assert changed_patch(BEFORE, property_digests(BEFORE), [THEIRS]) == {}


def test_only_changed_properties_go_and_a_vanished_path_is_null() -> None:
    after = project(period={"startDate": "2020-01-01"})
    assert changed_patch(after, property_digests(BEFORE), [THEIRS]) == {
        "title": None,
        "period": {"startDate": "2020-01-01", "endDate": None},
    }


def test_changed_identifiers_go_whole_with_the_other_sources_ones() -> None:
    moved = {**OURS, "value": "e:p:2"}
    after = replace(BEFORE, body={**BEFORE.body, "identifiers": [moved]})
    assert changed_patch(after, property_digests(BEFORE), [THEIRS]) == {
        "identifiers": [THEIRS, moved]
    }


def test_a_changed_class_needs_a_read_first() -> None:
    after = replace(BEFORE, body={**BEFORE.body, "typeDiscriminator": "OtherProject"})
    assert changed_patch(after, property_digests(BEFORE), []) is None
