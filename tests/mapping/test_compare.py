from __future__ import annotations

import pytest

from crisync.mapping.compare import Comparison, normalised, spellings
from crisync.mapping.rules import ObjectMapping


@pytest.mark.parametrize(
    ("comparison", "written", "compared"),
    [
        ("doi", "10.1234/ABC.5", "10.1234/abc.5"),
        ("doi", "https://doi.org/10.1234/abc.5", "10.1234/abc.5"),
        ("doi", "http://dx.doi.org/10.1234/abc.5", "10.1234/abc.5"),
        ("doi", "DOI: 10.1234/abc.5", "10.1234/abc.5"),
        ("doi", "not a doi", None),
        ("orcid", "https://orcid.org/0000-0002-1825-009x", "000000021825009X"),
        ("orcid", "0000000218250097", "0000000218250097"),
        ("issn", "1234567x", "1234-567X"),
        ("issn", "12345", None),
        ("scopus", "2-s2.0-85000000001", "85000000001"),
        ("scopus", "85000000001", "85000000001"),
        ("scopus", "2-s2.0-abc", None),
        ("email", " Ada@Example.ORG ", "ada@example.org"),
        ("email", "no address", None),
        ("text", "  Ada   LOVELACE ", "ada lovelace"),
        ("exact", " E1042 ", "E1042"),
        ("exact", 1042, "1042"),
        ("exact", {"not": "a value"}, None),
        ("exact", True, None),
    ],
)
def test_values_are_compared_as_people_write_them(
    comparison: Comparison, written: object, compared: str | None
) -> None:
    assert normalised(comparison, written) == compared


def test_a_mapping_that_creates_nothing_needs_a_way_to_find_content() -> None:
    with pytest.raises(ValueError, match="create = false needs match rules"):
        ObjectMapping.model_validate({"pure_type": "persons", "create": False})
    linked = ObjectMapping.model_validate(
        {
            "pure_type": "persons",
            "create": False,
            "match": [{"identifier": "synchronisedUnifiedPerson", "from": "attributes.x"}],
        }
    )
    assert linked.link_only


def test_a_match_rule_names_one_place_to_look() -> None:
    with pytest.raises(ValueError, match="one of identifier or property"):
        ObjectMapping.model_validate({"pure_type": "persons", "match": [{"from": "fields.x"}]})


@pytest.mark.parametrize(
    ("comparison", "value", "written"),
    [
        ("issn", "0021-9991", ["0021-9991", "00219991"]),
        ("orcid", "000000021825009X", ["0000-0002-1825-009X", "000000021825009X"]),
        ("doi", "10.1/x", ["10.1/x"]),
    ],
)
def test_a_search_looks_for_every_way_a_value_is_written(
    comparison: Comparison, value: str, written: list[str]
) -> None:
    assert spellings(comparison, value) == written
