"""Request bodies checked against the real Pure OpenAPI contract."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from crisync.handlers.pure.openapi import PureContract, json_path

CREATE = ("PUT", "/research-outputs")
ORG = "0b9c2a4e-8b1f-4e43-9d2c-1a2b3c4d5e6f"
PERSON = "5d1f6c2a-3e4b-4a5c-8d9e-0f1a2b3c4d5e"
EXTERNAL = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"


def ref(system_name: str, uuid: str) -> dict[str, str]:
    return {"systemName": system_name, "uuid": uuid}


def minimal_output() -> dict[str, Any]:
    return {
        "typeDiscriminator": "OtherContribution",
        "title": {"value": "On crystals"},
        "type": {
            "uri": "/dk/atira/pure/researchoutput/researchoutputtypes/othercontribution/other"
        },
        "category": {"uri": "/dk/atira/pure/researchoutput/category/research"},
        "language": {"uri": "/dk/atira/pure/core/languages/en_GB"},
        "contributors": [],
        "managingOrganization": ref("Organization", ORG),
        "publicationStatuses": [
            {
                "publicationStatus": {"uri": "/dk/atira/pure/researchoutput/status/published"},
                "publicationDate": {"year": 2024},
            }
        ],
        "identifiers": [
            {
                "typeDiscriminator": "PrimaryId",
                "idSource": "synchronisedResearchOutput",
                "value": "elements:publication:7",
            }
        ],
    }


def typical_output() -> dict[str, Any]:
    """What crisync sends for a journal-less publication with a few authors."""
    body = minimal_output()
    role = {"uri": "/dk/atira/pure/researchoutput/roles/othercontribution/author"}
    body["contributors"] = [
        {
            "typeDiscriminator": "InternalContributorAssociation",
            "name": {"firstName": "Ada", "lastName": f"Author {n}"},
            "role": role,
            "person": ref("Person", PERSON),
            "organizations": [ref("Organization", ORG)],
        }
        for n in range(4)
    ] + [
        {
            "typeDiscriminator": "ExternalContributorAssociation",
            "name": {"firstName": "Eve", "lastName": "External"},
            "role": role,
            "externalPerson": ref("ExternalPerson", EXTERNAL),
        }
    ]
    body["subTitle"] = {"value": "and their growth"}
    body["abstract"] = {"en_GB": "We grow crystals. " * 20}
    body["peerReview"] = True
    body["visibility"] = {"key": "FREE"}
    body["publicationStatuses"][0]["publicationDate"] = {"year": 2024, "month": 5, "day": 31}
    body["identifiers"].append(
        {
            "typeDiscriminator": "ClassifiedId",
            "id": "10.1000/xyz",
            "type": {"uri": "/dk/atira/pure/researchoutput/researchoutputidentifier/doi"},
        }
    )
    return body


@pytest.fixture(scope="module")
def contract() -> PureContract:
    return PureContract.load()


def errors(contract: PureContract, body: object) -> list[str]:
    return contract.validate_request_body(*CREATE, body)


def test_the_contract_is_parsed_once_per_process() -> None:
    assert PureContract.load() is PureContract.load()


def test_request_schemas_come_from_the_operations(contract: PureContract) -> None:
    assert contract.request_schema_for("PUT", "/research-outputs") == {
        "$ref": "#/components/schemas/ResearchOutput"
    }
    assert contract.request_schema_for("put", "/persons/{uuid}") == {
        "$ref": "#/components/schemas/Person"
    }
    assert contract.request_schema_for("GET", "/research-outputs") is None
    assert contract.request_schema_for("PUT", "/no-such-things") is None
    with pytest.raises(LookupError):
        contract.validate_request_body("GET", "/research-outputs", {})


def test_a_minimal_and_a_typical_research_output_are_valid(contract: PureContract) -> None:
    assert errors(contract, minimal_output()) == []
    assert errors(contract, typical_output()) == []


@pytest.mark.parametrize(
    "field",
    [
        "category",
        "contributors",
        "language",
        "managingOrganization",
        "publicationStatuses",
        "title",
        "type",
        "typeDiscriminator",
    ],
)
def test_each_required_field_is_named_when_missing(contract: PureContract, field: str) -> None:
    body = minimal_output()
    del body[field]
    # Reported once, though the subtype and its base both require it.
    assert errors(contract, body) == [f"$: {field!r} is a required property"]


def test_a_required_nullable_field_must_not_be_null(contract: PureContract) -> None:
    body = minimal_output()
    body["managingOrganization"] = None  # OrganizationRef is nullable, yet required here
    assert errors(contract, body) == [
        "$.managingOrganization: 'managingOrganization' is required and must not be null"
    ]


def test_the_discriminator_selects_the_subtype_and_its_own_requirements(
    contract: PureContract,
) -> None:
    body = minimal_output()
    body["typeDiscriminator"] = "ContributionToJournal"
    assert errors(contract, body) == ["$: 'journalAssociation' is a required property"]
    body["journalAssociation"] = {"journal": ref("Journal", EXTERNAL)}
    body["pages"] = "10-15"
    assert errors(contract, body) == []


def test_a_property_of_another_subtype_is_unknown(contract: PureContract) -> None:
    body = minimal_output()
    body["pages"] = "10-15"  # a ContributionToJournal property
    assert errors(contract, body) == [
        "$.pages: 'pages' is not a property of OtherContribution in the contract"
    ]


def test_a_misspelt_property_is_reported_at_any_depth(contract: PureContract) -> None:
    body = typical_output()
    body["managingOrganisation"] = body["managingOrganization"]
    body["contributors"][0]["person"]["uid"] = PERSON
    assert sorted(errors(contract, body)) == [
        "$.contributors[0].person.uid: 'uid' is not a property of PersonRef in the contract",
        "$.managingOrganisation: 'managingOrganisation' is not a property of"
        " OtherContribution in the contract",
    ]


def test_an_unknown_type_discriminator_is_an_error(contract: PureContract) -> None:
    body = minimal_output()
    body["typeDiscriminator"] = "Novel"
    (error,) = errors(contract, body)
    assert error.startswith(
        "$.typeDiscriminator: 'Novel' is not a ResearchOutput typeDiscriminator"
    )
    assert "'OtherContribution'" in error


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        (
            {"typeDiscriminator": "PrimaryId", "value": "elements:publication:7"},
            ["$.identifiers[0]: 'idSource' is a required property"],
        ),
        (
            {"typeDiscriminator": "ClassifiedId", "id": "10.1000/xyz"},
            ["$.identifiers[0]: 'type' is a required property"],
        ),
        (
            {"typeDiscriminator": "Id", "idSource": "scopus"},
            ["$.identifiers[0]: 'value' is a required property"],
        ),
        (
            {"idSource": "synchronisedResearchOutput", "value": "elements:publication:7"},
            ["$.identifiers[0]: 'typeDiscriminator' is a required property"],
        ),
        (
            {"typeDiscriminator": "DOI", "value": "10.1000/xyz"},
            [
                "$.identifiers[0].typeDiscriminator: 'DOI' is not a Identifier"
                " typeDiscriminator; expected one of ['ClassifiedId', 'Id', 'PrimaryId']"
            ],
        ),
    ],
)
def test_identifiers_dispatch_to_their_subtype(
    contract: PureContract, identifier: dict[str, Any], expected: list[str]
) -> None:
    body = minimal_output()
    body["identifiers"] = [identifier]
    assert errors(contract, body) == expected


def test_contributors_dispatch_to_their_subtype(contract: PureContract) -> None:
    body = typical_output()
    del body["contributors"][0]["role"]
    del body["contributors"][4]["externalPerson"]
    assert errors(contract, body) == [
        "$.contributors[0]: 'role' is a required property",
        "$.contributors[4]: 'externalPerson' is a required property",
    ]


def test_a_reference_must_name_the_right_kind_of_content(contract: PureContract) -> None:
    body = minimal_output()
    body["managingOrganization"] = ref("Person", ORG)
    assert errors(contract, body) == [
        "$.managingOrganization.systemName: 'Person' does not belong here;"
        " expected one of ['Organization']"
    ]


def test_nullable_admits_null_only_where_the_contract_says_so(contract: PureContract) -> None:
    body = minimal_output()
    body["peerReview"] = None  # nullable boolean
    body["organizations"] = None  # nullable array
    body["translatedTitle"] = None  # nullable map
    body["version"] = None  # null is a "dirty write"
    assert errors(contract, body) == []
    body["subTitle"] = None  # FormattedString is not nullable
    body["contributors"] = None  # not nullable, and required
    assert sorted(errors(contract, body)) == [
        "$.contributors: 'contributors' is required and must not be null",
        "$.contributors: None is not of type 'array'",
        "$.subTitle: None is not of type 'object'",
    ]


def test_read_only_properties_are_tolerated_but_never_required(contract: PureContract) -> None:
    body = minimal_output()
    body.update(
        pureId=42,
        uuid=PERSON,
        createdDate="2024-05-31T10:00:00.123Z",
        previousUuids=[ORG],
        systemName="ResearchOutput",
        version="5f2e",
    )
    assert errors(contract, body) == []
    # UploadedFile requires `key`, which is readOnly: a request need not send it.
    assert contract.violations({"$ref": "#/components/schemas/UploadedFile"}, {}) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda body: body["managingOrganization"].update(uuid="not-a-uuid"),
            "$.managingOrganization.uuid: 'not-a-uuid' is not a 'uuid'",
        ),
        (
            lambda body: body.update(createdDate="2024-05-31 10:00"),
            "$.createdDate: '2024-05-31 10:00' is not a 'date-time'",
        ),
        (
            lambda body: body["publicationStatuses"][0]["publicationDate"].update(year=4001),
            "$.publicationStatuses[0].publicationDate.year:"
            " 4001 is greater than the maximum of 4000",
        ),
        (
            lambda body: body["publicationStatuses"][0]["publicationDate"].update(year=True),
            "$.publicationStatuses[0].publicationDate.year: True is not of type 'integer'",
        ),
        (
            lambda body: body.update(totalNumberOfContributors=2**31),
            "$.totalNumberOfContributors: 2147483648 is not a 'int32'",
        ),
        (
            lambda body: body.update(visibility={"key": "PUBLIC"}),
            "$.visibility.key:"
            " 'PUBLIC' is not one of ['FREE', 'CAMPUS', 'BACKEND', 'CONFIDENTIAL']",
        ),
    ],
)
def test_formats_ranges_and_enums_are_checked(
    contract: PureContract, change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    body = minimal_output()
    change(body)
    assert errors(contract, body) == [expected]


def test_custom_defined_fields_dispatch_on_their_type(contract: PureContract) -> None:
    person: dict[str, Any] = {
        "name": {"firstName": "Ada", "lastName": "Lovelace"},
        "customDefinedFields": {
            "happy": {"typeDiscriminator": "Boolean", "value": True},
            "reason-for-happiness": {"typeDiscriminator": "String"},  # no value: cleared
            "since": {"typeDiscriminator": "Date", "value": "2024-02-29"},
        },
    }
    assert contract.validate_request_body("PUT", "/persons", person) == []
    fields = person["customDefinedFields"]
    fields["happy"]["value"] = "yes"
    fields["since"]["value"] = "2023-02-29"
    fields["reason-for-happiness"]["typeDiscriminator"] = "Text"
    assert sorted(contract.validate_request_body("PUT", "/persons", person)) == [
        "$.customDefinedFields.happy.value: 'yes' is not of type 'boolean', 'null'",
        "$.customDefinedFields.since.value: '2023-02-29' is not a 'date'",
        "$.customDefinedFields[\"reason-for-happiness\"].typeDiscriminator: 'Text' is not a"
        " CustomDefinedField typeDiscriminator; expected one of ['Boolean', 'Classification',"
        " 'Date', 'Decimal', 'Integer', 'String']",
    ]


def test_a_body_that_is_not_an_object_is_refused(contract: PureContract) -> None:
    assert errors(contract, []) == ["$: [] is not of type 'object'"]
    assert errors(contract, None) == ["$: None is not of type 'object'"]


def test_every_component_schema_compiles_without_endless_recursion(
    contract: PureContract,
) -> None:
    schemas = contract.document["components"]["schemas"]
    for name in schemas:
        # An empty object misses whatever the schema requires, but must not recurse forever.
        found = contract.violations({"$ref": f"#/components/schemas/{name}"}, {})
        assert isinstance(found, list), name
    # Validating a subtype directly goes through its base and stops there.
    primary = {"typeDiscriminator": "PrimaryId", "idSource": "x", "value": "y"}
    assert contract.violations({"$ref": "#/components/schemas/PrimaryId"}, primary) == []
    assert contract.violations({"$ref": "#/components/schemas/Identifier"}, primary) == []


MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("contributor role not an object", lambda b: b["contributors"][1].update(role="author")),
    ("name not an object", lambda b: b["contributors"][2].update(name=["Ada"])),
    ("unknown key in a name", lambda b: b["contributors"][3]["name"].update(middle="B")),
    ("org list holds a string", lambda b: b["contributors"][0].update(organizations=[ORG])),
    (
        "external person is a Person",
        lambda b: b["contributors"][4]["externalPerson"].update(systemName="Person"),
    ),
    (
        "month out of range",
        lambda b: b["publicationStatuses"][0]["publicationDate"].update(month=13),
    ),
    (
        "year is a float",
        lambda b: b["publicationStatuses"][0]["publicationDate"].update(year=2024.0),
    ),
    ("abstract value not a string", lambda b: b["abstract"].update(en_GB=5)),
    ("identifier value null", lambda b: b["identifiers"][0].update(value=None)),
    ("discriminator not a string", lambda b: b["identifiers"][1].update(typeDiscriminator=1)),
    ("discriminator unhashable", lambda b: b["contributors"][0].update(typeDiscriminator={})),
    ("peerReview a string", lambda b: b.update(peerReview="yes")),
    ("visibility key lower case", lambda b: b["visibility"].update(key="free")),
    ("title value missing", lambda b: b["title"].pop("value")),
    ("uuid with braces", lambda b: b["managingOrganization"].update(uuid="{" + ORG + "}")),
]


@pytest.mark.parametrize(("_label", "mutate"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_no_invalid_variant_of_a_valid_body_passes(
    contract: PureContract, _label: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    # Valid bodies take a fast path; each mutation must still be caught.
    body = copy.deepcopy(typical_output())
    mutate(body)
    assert errors(contract, body) != []


def test_json_paths_quote_keys_that_are_not_identifiers() -> None:
    assert json_path([]) == "$"
    assert json_path(["contributors", 0, "name"]) == "$.contributors[0].name"
    assert json_path(["customDefinedFields", "a-b"]) == '$.customDefinedFields["a-b"]'


def test_violations_carry_path_code_and_message(contract: PureContract) -> None:
    body = minimal_output()
    body["identifiers"] = [{"typeDiscriminator": "Novel"}]
    body["colour"] = "blue"
    found = contract.request_violations(*CREATE, body)
    assert [(v.path, v.code) for v in found] == [
        ("$.identifiers[0].typeDiscriminator", "unknownSubtype"),
        ("$.colour", "unknownProperty"),
    ]
