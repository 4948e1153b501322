"""Mappings as configuration: built-ins, a mapping file, the [mappings] section, their checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from crisync.config.load import ConfigError, load_config
from crisync.handlers.pure.mapping import id_source_of
from crisync.mapping.expressions import normalise_key, parse_expression
from crisync.mapping.rules import MappingsConfig, PersonsRule, PropertyRule
from tests.config.test_load import SECRETS, VALID
from tests.support.example import switched_on


def write_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "crisync.toml"
    path.write_text(VALID.format(state=tmp_path / "state.db") + extra)
    return path


def test_the_built_ins_cover_the_elements_categories_with_their_id_sources() -> None:
    mappings = MappingsConfig()
    expected = {
        "user": ("persons", "synchronisedUnifiedPerson"),
        "publication": ("research-outputs", "synchronisedResearchOutput"),
        "grant": ("awards", "synchronisedUnifiedAward"),
        "project": ("projects", "synchronisedUnifiedProject"),
        "org-structure": ("organizations", "synchronisedUnifiedOrganisation"),
        "equipment": ("equipment", "synchronisedUnifiedEquipment"),
        "activity": ("activities", "synchronisedActivity"),
    }
    elements = mappings.sources["elements"]
    assert {k: (m.type, id_source_of(m)) for k, m in elements.items()} == expected
    assert {m.target for m in elements.values()} == {"pure"}
    assert list(mappings.sources) == ["elements"]
    publication = elements["publication"]
    assert publication.on_delete == "unlock"
    assert {"title", "contributors", "managingOrganization"} <= publication.owned_properties
    assert mappings.look_up("languages", " EN ") == "/dk/atira/pure/core/languages/en_GB"


def test_each_kind_knows_the_other_kinds_its_references_name() -> None:
    referred = MappingsConfig().referred()
    assert referred[("elements", "publication")] == {"user"}
    assert referred[("elements", "user")] == frozenset()


def test_a_mapping_file_and_the_section_are_layered_over_the_built_ins(tmp_path: Path) -> None:
    (tmp_path / "mappings.toml").write_text("""
[lookups.languages]
cy = "/dk/atira/pure/core/languages/cy_GB"

[unicat.record]
pure_type = "research-outputs"
on_delete = "delete"
[unicat.record.properties]
typeDiscriminator = { value = "OtherContribution" }
"title.value" = { from = "fields.title", required = true }

[elements.user]
pure_type = "persons"
[elements.user.properties]
"name.lastName" = { from = "fields.surname" }
""")
    path = write_config(
        tmp_path,
        """
[mappings]
file = "mappings.toml"

[mappings.lookups.languages]
EN = "/dk/atira/pure/core/languages/en_US"

[mappings.elements.user]
pure_type = "persons"
id_source = "hrPersonId"
reference_key = ["name.lastName", "name.firstName|initials"]
[mappings.elements.user.properties]
"name.lastName" = { from = ["fields.last-name", "fields.surname"], required = true }
""",
    )
    mappings = load_config(str(path), env=SECRETS).config.mappings
    # The section's user mapping replaced the file's, which replaced the built-in, whole.
    user = mappings.sources["elements"]["user"]
    assert user.id_source == "hrPersonId"
    assert list(user.properties) == ["name.lastName"]
    assert user.properties["name.lastName"].from_ == ["fields.last-name", "fields.surname"]
    # Lookup tables gain and override entries; the others stay.
    assert mappings.look_up("languages", "cy") == "/dk/atira/pure/core/languages/cy_GB"
    assert mappings.look_up("languages", "en") == "/dk/atira/pure/core/languages/en_US"
    assert mappings.look_up("languages", "de") == "/dk/atira/pure/core/languages/de_DE"
    record = mappings.for_kind("unicat", "record")
    assert record is not None
    assert (record.type, id_source_of(record), record.on_delete) == (
        "research-outputs",
        "synchronisedResearchOutput",
        "delete",
    )
    assert "publication" in mappings.sources["elements"]
    assert mappings.declared == {("elements", "user"), ("unicat", "record")}


def test_without_the_built_ins_only_the_configured_mappings_apply() -> None:
    mappings = MappingsConfig.model_validate(
        {
            "builtin": False,
            "elements": {
                "user": {"pure_type": "persons", "properties": {"name.lastName": {"value": "X"}}}
            },
        }
    )
    assert list(mappings.sources) == ["elements"]
    assert list(mappings.sources["elements"]) == ["user"]
    assert mappings.lookups == {}


def test_every_mapping_problem_is_reported_with_where_it_is(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[mappings.elements.publication]
pure_type = "research-outputs"
[mappings.elements.publication.properties]
"title.value" = { from = "fields.title|upper" }
"type.uri" = { from = "attributes.type", lookup = "no-such-table" }
managingOrganization = { reference = "department", from = "fields.dept" }
contributors = { persons = { from = "fields.authors", role = "r", match = ["last-name"] } }

[mappings.elements.grant]
pure_type = "grants"
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env=SECRETS)
    problems = "\n".join(caught.value.problems)
    assert "mappings.elements.publication.properties.title.value.from" in problems
    assert "unknown filter 'upper'" in problems
    assert "mappings.elements.grant: unknown Pure type 'grants'" in problems


def test_references_must_name_mapped_kinds_and_matches_their_key() -> None:
    with pytest.raises(ValidationError) as caught:
        MappingsConfig.model_validate(
            {
                "elements": {
                    "publication": {
                        "pure_type": "research-outputs",
                        "properties": {
                            "type.uri": {"from": "attributes.type", "lookup": "no-such-table"},
                            "managingOrganization": {"reference": "department", "from": "x"},
                            "contributors": {
                                "persons": {"from": "a", "role": "r", "match": ["last-name"]}
                            },
                        },
                    }
                }
            }
        )
    message = str(caught.value)
    assert "elements.publication.type.uri: no lookup table 'no-such-table'" in message
    assert "elements.publication.managingOrganization: no mapping for elements department" in (
        message
    )
    assert "match has 1 parts, elements.user reference_key has 2" in message


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ({}, "exactly one of"),
        ({"value": "x", "from": "fields.x"}, "exactly one of"),
        ({"value": "x", "lookup": "languages"}, "lookup, default and as go with from"),
        ({"from": "fields.x", "many": True}, "many goes with reference or fallback"),
        ({"reference": "user"}, "a reference names the kind it refers to"),
        ({"from": "fields.x", "fallback": "managing-organization"}, "a reference names the kind"),
        ({"from": "fields..x"}, "a path is dot-separated names"),
    ],
)
def test_a_property_rule_is_one_thing(rule: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        MappingsConfig.model_validate(
            {"elements": {"user": {"pure_type": "persons", "properties": {"name": rule}}}}
        )


def test_crisync_keeps_custom_fields_to_itself(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[mappings.elements.user]
pure_type = "persons"
[mappings.elements.user.properties]
"customDefinedFields.x" = { from = "id" }
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env=SECRETS)
    assert caught.value.problems == [
        "mappings.elements.user: 'customDefinedFields.x': crisync writes customDefinedFields itself"
    ]


def test_a_mapping_names_a_known_target_for_a_source_that_reads_its_kind(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[mappings.elements.usr]
pure_type = "persons"
[mappings.elemnts.user]
pure_type = "persons"
[mappings.elements.grant]
dspace_type = "items"
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env=SECRETS)
    assert caught.value.problems == [
        "mappings.elements.grant: no target is named 'dspace'; known: ['pure']",
    ]
    path.write_text(path.read_text().replace('dspace_type = "items"', 'pure_type = "awards"'))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env=SECRETS)
    assert caught.value.problems == [
        "mappings.elements.grant: elements reads no grant objects (publication, user)",
        "mappings.elements.usr: elements reads no usr objects (publication, user)",
        "mappings.elemnts.user: no source is named 'elemnts'",
    ]


def test_a_mapping_file_that_cannot_be_read_is_a_configuration_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, '\n[mappings]\nfile = "missing.toml"\n')
    with pytest.raises(ConfigError, match="cannot read mapping file"):
        load_config(str(path), env=SECRETS)
    (tmp_path / "bad.toml").write_text("[pure]\nurl = 'x'\n")
    path = write_config(tmp_path, '\n[mappings]\nfile = "bad.toml"\n')
    with pytest.raises(ConfigError, match=r"mappings.pure.url: Input should be a valid dict"):
        load_config(str(path), env=SECRETS)


def test_expressions_walk_paths_and_apply_filters() -> None:
    payload = {
        "fields": {
            "first-name": "Mary Ann",
            "start-date": {"year": 2021, "month": 3},
            "authors": [{"last-name": "Hook"}],
            "funded": "Yes",
        }
    }
    assert parse_expression("fields.first-name|initials").evaluate(payload) == "MA"
    assert parse_expression("fields.start-date|date").evaluate(payload) == "2021-03-01"
    assert parse_expression("fields.start-date|year").evaluate(payload) == 2021
    assert parse_expression("fields.authors.0.last-name").evaluate(payload) == "Hook"
    assert parse_expression("fields.funded|boolean").evaluate(payload) is True
    assert parse_expression("fields.authors.1.last-name").evaluate(payload) is None
    assert parse_expression("fields.missing|initials").evaluate(payload) is None


def test_match_keys_ignore_case_dots_and_spacing() -> None:
    assert normalise_key(["Müller", "J.-L."]) == normalise_key(["MÜLLER ", "j -l"])
    assert normalise_key(["Hook", "D"]) != normalise_key(["Hook", "DW"])


def test_the_example_configuration_loads_with_its_mappings(tmp_path: Path) -> None:
    example = switched_on("unicat", "mappings.unicat.record")
    path = tmp_path / "crisync.toml"
    path.write_text(example.replace("/var/lib/crisync", str(tmp_path)))
    config = load_config(str(path), env={**SECRETS, "CRISYNC_UNICAT_API_KEY": "u"}).config
    assert config.mappings.for_kind("elements", "publication") is not None
    unicat_record = config.mappings.for_kind("unicat", "record")
    assert unicat_record is not None
    assert (unicat_record.target, unicat_record.type) == ("pure", "persons")
    assert config.pure is not None


def test_a_kind_read_without_a_mapping_is_refused_before_it_runs(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    categories = '["users", "publications", "teaching-activities"]'
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={**SECRETS, "CRISYNC_ELEMENTS__CATEGORIES": categories})
    assert caught.value.problems == [
        "elements: reads teaching-activity objects, but no mapping says what they become: "
        "add [mappings.elements.teaching-activity] or stop reading them"
    ]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"key": ["user-id"], "relationships": {}}, "recognise persons by `key`"),
        ({"relationships": {}}, "relationships need `match`"),
        ({"match": ["last-name"], "relationships": {"types": []}}, "at least 1 item"),
        ({"match": ["last-name"], "relationships": {"visible": True}}, "Extra inputs"),
    ],
)
def test_a_persons_rule_with_relationships_is_checked(
    rule: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        PersonsRule.model_validate({"from": "fields.authors", "role": "r", **rule})


def test_the_built_in_publication_mapping_links_visible_claimed_authorship_only() -> None:
    persons = MappingsConfig.model_validate({}).sources["elements"]["publication"]
    rule = persons.properties["contributors"].persons
    assert rule is not None
    assert rule.relationships is not None
    assert rule.relationships.types == ["publication-user-authorship"]
    assert (rule.relationships.visible_only, rule.relationships.claimed_only) == (True, True)
    assert rule.identifier == {
        "orcid": ["identifiers.orcid"],
        "scopus-author-id": ["identifiers.scopus-author-id"],
    }


def test_a_persons_rule_names_its_identifier_schemes_or_gives_orcid_expressions() -> None:
    def identifier(value: object) -> dict[str, list[str]]:
        rule = {"from": "fields.authors", "role": "r", "identifier": value}
        return PersonsRule.model_validate(rule).identifier

    assert identifier("identifiers.orcid") == {"orcid": ["identifiers.orcid"]}
    assert identifier({"scopus-author-id": "ids.scopus"}) == {"scopus-author-id": ["ids.scopus"]}
    with pytest.raises(ValidationError, match="unknown identifier scheme researcherid: one of"):
        identifier({"researcherid": "identifiers.researcherid"})


def test_entries_take_their_values_from_the_source() -> None:
    with pytest.raises(ValueError, match="each of entries takes its value from the source"):
        PropertyRule.model_validate({"entries": [{"value": "x"}]})
