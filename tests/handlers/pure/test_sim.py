"""The Pure API simulator, exercised over real loopback HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from crisync.handlers.pure.openapi import PureContract
from crisync.handlers.pure.sim import PureSimulator, content_types
from crisync.sim.server import serve

KEY = "pure-test-key-5d1c"
BASE = "/ws/api"
MISSING = "00000000-0000-4000-8000-000000000000"


@asynccontextmanager
async def running(sim: PureSimulator) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A session sending the right api-key, and the API base URL of the running simulator."""
    async with (
        serve(sim.app()) as origin,
        aiohttp.ClientSession(headers={"api-key": KEY}) as session,
    ):
        yield session, origin + BASE


@pytest.fixture
def sim() -> PureSimulator:
    return PureSimulator(api_key=KEY, seed=3)


@pytest.fixture
async def api(sim: PureSimulator) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with running(sim) as connection:
        yield connection


async def call(
    api: tuple[aiohttp.ClientSession, str], method: str, path: str, body: Any = None
) -> tuple[aiohttp.ClientResponse, Any]:
    """One request; the answer and its JSON body (None when it has none)."""
    session, base = api
    async with session.request(method, base + path, json=body, allow_redirects=False) as response:
        raw = await response.read()
        return response, (await response.json(content_type=None) if raw else None)


def output(org: str, **changes: Any) -> dict[str, Any]:
    body = {
        "typeDiscriminator": "OtherContribution",
        "title": {"value": "On crystals"},
        "type": {
            "uri": "/dk/atira/pure/researchoutput/researchoutputtypes/othercontribution/other"
        },
        "category": {"uri": "/dk/atira/pure/researchoutput/category/research"},
        "language": {"uri": "/dk/atira/pure/core/languages/en_GB"},
        "contributors": [],
        "managingOrganization": {"systemName": "Organization", "uuid": org},
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
    body.update(changes)
    return body


def person(org: str, key: str = "elements:user:1", last: str = "Lovelace") -> dict[str, Any]:
    return {
        "name": {"firstName": "Ada", "lastName": last},
        "identifiers": [
            {
                "typeDiscriminator": "PrimaryId",
                "idSource": "synchronisedUnifiedPerson",
                "value": key,
            }
        ],
        "staffOrganizationAssociations": [
            {
                "typeDiscriminator": "StaffOrganizationAssociation",
                "organization": {"systemName": "Organization", "uuid": org},
                "period": {"startDate": "2020-01-01"},
            }
        ],
    }


def problem_errors(body: dict[str, Any]) -> list[str]:
    return [f"{e['path']}: {e['title']['en_GB']}" for e in body["errors"]]


def assert_problem(response: aiohttp.ClientResponse, body: Any, status: int) -> None:
    assert response.status == status
    assert response.content_type == "application/problem+json"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    problem_schema = "ConflictProblemDetails" if status == 409 else "ProblemDetails"
    assert (
        PureContract.load().violations({"$ref": f"#/components/schemas/{problem_schema}"}, body)
        == []
    )


async def create_output(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str], **changes: Any
) -> dict[str, Any]:
    response, body = await call(
        api, "PUT", "/research-outputs", output(sim.organization_uuids[0], **changes)
    )
    assert response.status == 201, body
    return dict(body)


def test_content_types_are_those_the_contract_lets_a_client_create_and_lock() -> None:
    types = content_types(PureContract.load())
    assert set(types) == {
        "applications",
        "awards",
        "events",
        "external-organizations",
        "external-persons",
        "journals",
        "organizations",
        "persons",
        "projects",
        "publishers",
        "research-outputs",
        "users",
    }
    outputs = types["research-outputs"]
    assert outputs.system_name == "ResearchOutput"
    assert {"uuid", "pureId", "createdDate", "previousUuids"} <= outputs.server_managed
    assert "version" not in outputs.server_managed
    assert types["external-persons"].system_name == "ExternalPerson"
    assert types["persons"].has_custom_fields
    assert not types["journals"].has_custom_fields


async def test_a_minimal_research_output_is_created_and_read_back(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    assert created["systemName"] == "ResearchOutput"
    assert isinstance(created["pureId"], int)
    assert isinstance(created["version"], str)
    assert created["createdDate"] == created["modifiedDate"]
    assert created["createdDate"].endswith("Z")
    assert created["title"] == {"value": "On crystals"}
    assert sim.objects("research-outputs") == {created["uuid"]: created}
    response, read = await call(api, "GET", f"/research-outputs/{created['uuid']}")
    assert response.status == 200
    assert read == created
    # What a client reads it may send back unchanged.
    contract = PureContract.load()
    assert contract.validate_request_body("PUT", "/research-outputs/{uuid}", read) == []


async def test_missing_required_fields_are_named_in_a_validation_problem(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    body = output(sim.organization_uuids[0])
    del body["title"], body["language"]
    response, problem = await call(api, "PUT", "/research-outputs", body)
    assert_problem(response, problem, 400)
    assert problem["type"] == "/validation-error"
    assert problem_errors(problem) == [
        "$: 'language' is a required property",
        "$: 'title' is a required property",
    ]
    assert [e["code"] for e in problem["errors"]] == ["required", "required"]
    assert sim.objects("research-outputs") == {}


@pytest.mark.parametrize(
    ("changes", "expected_path", "expected_code"),
    [
        ({"typeDiscriminator": "Novel"}, "$.typeDiscriminator", "unknownSubtype"),
        (
            {
                "identifiers": [
                    {"typeDiscriminator": "PrimaryId", "value": "elements:publication:7"}
                ]
            },
            "$.identifiers[0]",
            "required",
        ),
        (
            {"managingOrganization": {"systemName": "Organization", "uuid": MISSING}},
            "$.managingOrganization",
            "unknownReference",
        ),
        ({"uuid": MISSING}, "$.uuid", "readOnly"),
        ({"version": "1f2e3d"}, "$.version", "version"),
    ],
)
async def test_a_create_pure_would_refuse_is_a_400(
    sim: PureSimulator,
    api: tuple[aiohttp.ClientSession, str],
    changes: dict[str, Any],
    expected_path: str,
    expected_code: str,
) -> None:
    response, problem = await call(
        api, "PUT", "/research-outputs", output(sim.organization_uuids[0], **changes)
    )
    assert_problem(response, problem, 400)
    assert [(e["path"], e["code"]) for e in problem["errors"]] == [(expected_path, expected_code)]
    assert sim.objects("research-outputs") == {}


async def test_a_body_that_is_not_json_is_a_400(api: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = api
    for data, content_type in (("{", "application/json"), ("{}", "text/plain")):
        async with session.put(
            base + "/persons", data=data, headers={"Content-Type": content_type}
        ) as response:
            assert_problem(response, await response.json(content_type=None), 400)


async def test_a_person_is_created_and_can_be_a_contributor(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    org = sim.organization_uuids[1]
    response, created = await call(api, "PUT", "/persons", person(org))
    assert response.status == 201
    assert created["systemName"] == "Person"
    assert created["identifiers"][0]["idSource"] == "synchronisedUnifiedPerson"
    contributor = {
        "typeDiscriminator": "InternalContributorAssociation",
        "name": {"firstName": "Ada", "lastName": "Lovelace"},
        "role": {"uri": "/dk/atira/pure/researchoutput/roles/othercontribution/author"},
        "person": {"systemName": "Person", "uuid": created["uuid"]},
        "organizations": [{"systemName": "Organization", "uuid": org}],
    }
    await create_output(sim, api, contributors=[contributor])
    # A contributor naming a person Pure does not have is refused.
    contributor["person"] = {"systemName": "Person", "uuid": MISSING}
    response, problem = await call(
        api, "PUT", "/research-outputs", output(org, contributors=[contributor])
    )
    assert_problem(response, problem, 400)
    assert [e["path"] for e in problem["errors"]] == ["$.contributors[0].person"]


async def test_a_staff_association_with_an_unknown_organization_is_refused(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    response, problem = await call(api, "PUT", "/persons", person(MISSING))
    assert_problem(response, problem, 400)
    assert problem_errors(problem) == [
        f"$.staffOrganizationAssociations[0].organization: no Organization with uuid {MISSING}"
    ]


async def test_an_update_with_the_current_version_succeeds_and_a_stale_one_conflicts(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}"
    changed = dict(created, title={"value": "On quasicrystals"})
    del changed["identifiers"]  # absent properties stay as they were
    response, updated = await call(api, "PUT", path, changed)
    assert response.status == 200
    assert updated["title"] == {"value": "On quasicrystals"}
    assert updated["identifiers"] == created["identifiers"]
    assert updated["version"] != created["version"]
    assert (updated["uuid"], updated["pureId"]) == (created["uuid"], created["pureId"])
    assert updated["createdDate"] == created["createdDate"]
    # The version read before that update is stale now.
    response, problem = await call(api, "PUT", path, dict(changed, title={"value": "Late"}))
    assert_problem(response, problem, 409)
    assert problem["modified"] == updated["modifiedDate"]
    assert problem["modifiedBy"] == "api"
    assert sim.objects("research-outputs")[created["uuid"]]["title"] == {
        "value": "On quasicrystals"
    }


async def test_an_update_without_version_is_a_dirty_write(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    body = output(sim.organization_uuids[0], version=None, title={"value": "Overwritten"})
    response, updated = await call(api, "PUT", f"/research-outputs/{created['uuid']}", body)
    assert response.status == 200
    assert updated["title"] == {"value": "Overwritten"}


async def test_an_update_is_a_json_merge_patch(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    """RFC 7386: absent properties stay, null removes, objects merge, arrays replace."""
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}"
    extra_id = {"typeDiscriminator": "PrimaryId", "idSource": "scopus", "value": "85000"}
    patch = {
        "version": created["version"],
        "title": {"value": "Only a title"},
        "abstract": {"en_GB": "Crystals.", "da_DK": "Krystaller."},
        "identifiers": [extra_id],
    }
    response, updated = await call(api, "PUT", path, patch)
    assert response.status == 200
    assert updated["title"] == {"value": "Only a title"}
    assert updated["category"] == created["category"]
    assert updated["identifiers"] == [extra_id]
    patch = {"version": updated["version"], "abstract": {"da_DK": None}, "title": None}
    response, problem = await call(api, "PUT", path, patch)
    assert_problem(response, problem, 400)
    assert "$: 'title' is a required property" in problem_errors(problem)
    response, updated = await call(api, "PUT", path, dict(patch, title={"value": "T"}))
    assert response.status == 200
    assert updated["abstract"] == {"en_GB": "Crystals."}
    response, updated = await call(
        api, "PUT", path, {"version": updated["version"], "abstract": None}
    )
    assert "abstract" not in updated


async def test_an_update_is_validated_like_a_create(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}"
    cleared = {"version": created["version"], "category": None}
    response, problem = await call(api, "PUT", path, cleared)
    assert_problem(response, problem, 400)
    assert "$: 'category' is a required property" in problem_errors(problem)
    retyped = dict(created, typeDiscriminator="Memorandum")
    response, problem = await call(api, "PUT", path, retyped)
    assert_problem(response, problem, 400)
    assert [e["code"] for e in problem["errors"]] == ["immutable"]
    moved = dict(created, uuid=MISSING)
    response, problem = await call(api, "PUT", path, moved)
    assert [e["path"] for e in problem["errors"]] == ["$.uuid"]
    assert sim.objects("research-outputs")[created["uuid"]] == created


async def test_unknown_and_malformed_uuids(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    body = output(sim.organization_uuids[0])
    for method, path, payload in (
        ("GET", f"/research-outputs/{MISSING}", None),
        ("PUT", f"/research-outputs/{MISSING}", body),
        ("DELETE", f"/research-outputs/{MISSING}", None),
        ("POST", f"/research-outputs/{MISSING}/actions/lock", None),
    ):
        response, problem = await call(api, method, path, payload)
        assert_problem(response, problem, 404)
    response, problem = await call(api, "GET", "/research-outputs/12345")
    assert_problem(response, problem, 400)


async def test_lock_and_unlock_answer_409_when_already_so(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}/actions"
    assert not sim.is_locked("research-outputs", created["uuid"])
    response, body = await call(api, "POST", f"{path}/lock")
    assert (response.status, body) == (204, None)
    assert sim.is_locked("research-outputs", created["uuid"])
    response, problem = await call(api, "POST", f"{path}/lock")
    assert_problem(response, problem, 409)
    response, _ = await call(api, "POST", f"{path}/unlock")
    assert response.status == 204
    assert not sim.is_locked("research-outputs", created["uuid"])
    response, problem = await call(api, "POST", f"{path}/unlock")
    assert_problem(response, problem, 409)


async def test_without_the_api_key_every_request_is_a_401(sim: PureSimulator) -> None:
    async with serve(sim.app()) as origin, aiohttp.ClientSession() as session:
        for headers in ({}, {"api-key": "wrong"}):
            async with session.get(
                f"{origin}{BASE}/organizations/{sim.organization_uuids[0]}", headers=headers
            ) as response:
                problem = await response.json(content_type=None)
                assert_problem(response, problem, 401)
                assert KEY not in await response.text()
    assert sim.request_counts == {}


async def test_a_merged_object_answers_301_to_the_survivor(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    org = sim.organization_uuids[0]
    _, first = await call(api, "PUT", "/persons", person(org, "elements:user:1"))
    _, second = await call(api, "PUT", "/persons", person(org, "elements:user:2"))
    contributor = {
        "typeDiscriminator": "InternalContributorAssociation",
        "name": {"firstName": "Ada", "lastName": "Lovelace"},
        "role": {"uri": "/dk/atira/pure/researchoutput/roles/othercontribution/author"},
        "person": {"systemName": "Person", "uuid": first["uuid"]},
    }
    authored = await create_output(sim, api, contributors=[contributor])
    sim.merge("persons", first["uuid"], second["uuid"])
    response, _ = await call(api, "GET", f"/persons/{first['uuid']}")
    assert response.status == 301
    assert response.headers["Location"].endswith(f"{BASE}/persons/{second['uuid']}")
    response, survivor = await call(api, "GET", f"/persons/{second['uuid']}")
    assert survivor["previousUuids"] == [first["uuid"]]
    assert survivor["version"] != second["version"]
    response, problem = await call(api, "PUT", f"/persons/{first['uuid']}", person(org))
    assert_problem(response, problem, 404)
    # Content that named the merged person names the survivor now.
    _, rewritten = await call(api, "GET", f"/research-outputs/{authored['uuid']}")
    assert rewritten["contributors"][0]["person"]["uuid"] == second["uuid"]
    assert rewritten["version"] != authored["version"]
    # A later merge of the survivor redirects the first uuid too.
    _, third = await call(api, "PUT", "/persons", person(org, "elements:user:3"))
    sim.merge("persons", second["uuid"], third["uuid"])
    response, _ = await call(api, "GET", f"/persons/{first['uuid']}")
    assert response.headers["Location"].endswith(f"/persons/{third['uuid']}")
    assert sim.objects("persons")[third["uuid"]]["previousUuids"] == [
        second["uuid"],
        first["uuid"],
    ]


async def test_lists_are_paged(sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]) -> None:
    uuids = []
    for n in range(5):
        _, created = await call(
            api, "PUT", "/persons", person(sim.organization_uuids[0], f"elements:user:{n}")
        )
        uuids.append(created["uuid"])
    response, page = await call(api, "GET", "/persons?size=2&offset=1")
    assert response.status == 200
    assert page["count"] == 5
    assert page["pageInformation"] == {"offset": 1, "size": 2}
    assert [item["uuid"] for item in page["items"]] == uuids[1:3]
    _, default = await call(api, "GET", "/organizations")
    assert [item["uuid"] for item in default["items"]] == sim.organization_uuids
    assert default["pageInformation"] == {"offset": 0, "size": 10}
    for query in ("size=1001", "size=ten", "offset=-1"):
        response, problem = await call(api, "GET", f"/persons?{query}")
        assert_problem(response, problem, 400)


async def test_search_filters_by_uuid_and_text(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    org = sim.organization_uuids[0]
    _, ada = await call(api, "PUT", "/persons", person(org, "elements:user:1", "Lovelace"))
    _, alan = await call(api, "PUT", "/persons", person(org, "elements:user:2", "Turing"))
    response, found = await call(api, "POST", "/persons/search", {"uuids": [alan["uuid"]]})
    assert response.status == 200
    assert [item["uuid"] for item in found["items"]] == [alan["uuid"]]
    # Any word matches; the objects matching most words come first.
    _, found = await call(api, "POST", "/persons/search", {"searchString": "ELEMENTS:USER:2"})
    assert [item["uuid"] for item in found["items"]] == [alan["uuid"], ada["uuid"]]
    assert found["count"] == 2
    _, found = await call(
        api, "POST", "/persons/search", {"searchString": "lovelace", "offset": 0, "size": 5}
    )
    assert [item["uuid"] for item in found["items"]] == [ada["uuid"]]
    # Words match whole: "lovelac" finds no "Lovelace".
    _, found = await call(api, "POST", "/persons/search", {"searchString": "lovelac"})
    assert found["items"] == []
    response, problem = await call(api, "POST", "/persons/search", {"searchstring": "x"})
    assert_problem(response, problem, 400)
    # The contract has no search for users: only /users/{uuid} matches, with other methods.
    response, problem = await call(api, "POST", "/users/search", {})
    assert_problem(response, problem, 405)


async def test_search_finds_what_objects_say_now_after_updates_and_edits(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}"

    async def found(word: str) -> list[str]:
        _, page = await call(api, "POST", "/research-outputs/search", {"searchString": word})
        return [item["uuid"] for item in page["items"]]

    assert await found("crystals") == [created["uuid"]]
    await call(api, "PUT", path, {**created, "title": {"value": "On salts"}})
    assert await found("crystals") == []
    assert await found("salts") == [created["uuid"]]
    sim.edit("research-outputs", created["uuid"], {"title": {"value": "On glass"}})
    assert await found("salts") == []
    assert await found("glass") == [created["uuid"]]


async def test_request_counts_count_each_operation_per_type(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}"
    await call(api, "GET", path)
    await call(api, "GET", path)
    await call(api, "PUT", path, created)
    await call(api, "POST", f"{path}/actions/lock")
    await call(api, "POST", f"{path}/actions/unlock")
    await call(api, "GET", "/research-outputs")
    await call(api, "POST", "/research-outputs/search", {})
    await call(api, "DELETE", path)
    await call(api, "GET", f"/persons/{MISSING}")
    assert sim.request_counts == {
        ("research-outputs", "create"): 1,
        ("research-outputs", "get"): 2,
        ("research-outputs", "update"): 1,
        ("research-outputs", "lock"): 1,
        ("research-outputs", "unlock"): 1,
        ("research-outputs", "list"): 1,
        ("research-outputs", "search"): 1,
        ("research-outputs", "delete"): 1,
        ("persons", "get"): 1,
    }


async def test_delete_removes_the_object(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}"
    await call(api, "POST", f"{path}/actions/lock")
    response, _ = await call(api, "DELETE", path)
    assert response.status == 204
    assert sim.objects("research-outputs") == {}
    assert not sim.is_locked("research-outputs", created["uuid"])
    response, problem = await call(api, "GET", path)
    assert_problem(response, problem, 404)


async def test_injected_failures_hit_the_next_matching_requests(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    org_path = f"/organizations/{sim.organization_uuids[0]}"
    sim.fail_next(503, count=2, content_type="organizations", retry_after=7)
    response, _ = await call(api, "GET", f"/persons/{MISSING}")
    assert response.status == 404  # another type: not hit
    for _ in range(2):
        response, problem = await call(api, "GET", org_path)
        assert_problem(response, problem, 503)
        assert response.headers["Retry-After"] == "7"
    response, _ = await call(api, "GET", org_path)
    assert response.status == 200


async def test_an_injected_failure_of_one_operation_passes_the_others(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    sim.fail_next(400, content_type="research-outputs", operation="create")
    response, _ = await call(api, "POST", "/research-outputs/search", {"searchString": "x"})
    assert response.status == 200  # search documents a 400 too: not hit
    response, problem = await call(
        api, "PUT", "/research-outputs", output(sim.organization_uuids[0])
    )
    assert_problem(response, problem, 400)
    assert sim.objects("research-outputs") == {}


async def test_an_injected_409_passes_reads_and_hits_the_update(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}"
    sim.fail_next(409)
    response, read = await call(api, "GET", path)
    assert response.status == 200
    response, problem = await call(api, "PUT", path, read)
    assert_problem(response, problem, 409)
    response, _ = await call(api, "PUT", path, read)
    assert response.status == 200


async def test_a_failure_after_write_loses_only_the_answer(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    sim.fail_next(504, after_write=True)
    response, problem = await call(
        api, "PUT", "/research-outputs", output(sim.organization_uuids[0])
    )
    assert_problem(response, problem, 504)
    assert len(sim.objects("research-outputs")) == 1


def test_fail_next_refuses_unknown_statuses_types_and_operations(sim: PureSimulator) -> None:
    with pytest.raises(ValueError, match="599"):
        sim.fail_next(599)
    with pytest.raises(ValueError, match="equipment"):
        sim.fail_next(503, content_type="equipment")
    with pytest.raises(ValueError, match="count"):
        sim.fail_next(503, count=0)
    with pytest.raises(ValueError, match="merge"):
        sim.fail_next(503, operation="merge")


async def storm_statuses(sim: PureSimulator, requests: int) -> list[int]:
    """The statuses of `requests` reads of an organization under the simulator's storm."""
    async with running(sim) as api:
        path = f"/organizations/{sim.organization_uuids[0]}"
        return [(await call(api, "GET", path))[0].status for _ in range(requests)]


async def test_a_storm_fails_about_its_rate_the_same_way_for_the_same_seed() -> None:
    requests = 400
    sims = [PureSimulator(api_key=KEY, seed=3) for _ in range(3)]
    for sim, seed in zip(sims, (5, 5, 6), strict=True):
        sim.storm(0.3, statuses=(500, 503, 504), seed=seed)
    same, again, other = [await storm_statuses(sim, requests) for sim in sims]
    failed = sum(status != 200 for status in same)
    # 4.5 standard deviations of the binomial either side: a wrong rate fails, chance does not.
    assert 0.3 * requests - 41 <= failed <= 0.3 * requests + 41
    assert {status for status in same if status != 200} == {500, 503, 504}
    assert sum(sims[0].storm_failures.values()) == failed
    assert same == again
    assert same != other


async def test_a_storm_409_hits_only_what_documents_it_and_is_true(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    path = f"/research-outputs/{created['uuid']}"
    sim.storm(1.0, statuses=(409,), after_write_share=0)
    response, read = await call(api, "GET", path)
    assert response.status == 200  # no 409 in the contract for a read: no failure to draw
    response, problem = await call(api, "PUT", path, read)
    assert_problem(response, problem, 409)
    assert sim.objects("research-outputs")[created["uuid"]]["version"] == read["version"]
    response, problem = await call(api, "POST", f"{path}/actions/lock")
    assert_problem(response, problem, 409)
    # "Content already locked", the contract's 409: the storm made it so before saying it.
    assert sim.is_locked("research-outputs", created["uuid"])
    response, _ = await call(api, "PUT", "/research-outputs", output(sim.organization_uuids[0]))
    assert response.status == 201
    assert sim.storm_failures == {"409": 1, "409 after write": 1}


async def test_a_storm_failure_after_write_keeps_the_write_on_writes_only(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    sim.storm(1.0, statuses=(503,), after_write_share=1)
    response, problem = await call(
        api, "PUT", "/research-outputs", output(sim.organization_uuids[0])
    )
    assert_problem(response, problem, 503)
    [stored] = sim.objects("research-outputs").values()
    response, problem = await call(api, "GET", f"/research-outputs/{stored['uuid']}")
    assert_problem(response, problem, 503)
    assert sim.storm_failures == {"503 after write": 1, "503": 1}
    sim.storm(0)
    response, _ = await call(api, "GET", f"/research-outputs/{stored['uuid']}")
    assert response.status == 200


async def test_a_storm_hang_outlasts_a_short_timeout_and_may_still_write(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    session, base = api
    sim.storm(1.0, statuses=(), hang_s=0.6, after_write_share=1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await session.put(
            base + "/research-outputs",
            json=output(sim.organization_uuids[0]),
            timeout=aiohttp.ClientTimeout(total=0.2),
        )
    assert time.monotonic() - started < 0.5
    assert len(sim.objects("research-outputs")) == 1  # committed before the hang
    started = time.monotonic()
    response, problem = await call(api, "GET", f"/organizations/{sim.organization_uuids[0]}")
    assert time.monotonic() - started >= 0.6
    assert_problem(response, problem, 504)  # a patient client meets the gateway's answer
    assert sim.storm_failures == {"hang after write": 1, "hang": 1}


def test_storm_refuses_impossible_settings(sim: PureSimulator) -> None:
    with pytest.raises(ValueError, match="rate"):
        sim.storm(1.3)
    with pytest.raises(ValueError, match="after_write_share"):
        sim.storm(0.3, after_write_share=-0.1)
    with pytest.raises(ValueError, match="204"):
        sim.storm(0.3, statuses=(503, 204))
    with pytest.raises(ValueError, match="hang_s"):
        sim.storm(0.3, hang_s=0)


async def test_latency_delays_every_answer() -> None:
    sim = PureSimulator(api_key=KEY, latency_ms=200)
    async with running(sim) as api:
        started = time.monotonic()
        response, _ = await call(api, "GET", f"/organizations/{sim.organization_uuids[0]}")
        assert response.status == 200
        assert time.monotonic() - started >= 0.2


async def test_a_write_is_carried_out_halfway_through_the_latency() -> None:
    """A client that gives up before the answer may have had its write done: the answer was
    lost, not the request."""
    sim = PureSimulator(api_key=KEY, latency_ms=1000)
    async with running(sim) as api:
        session, base = api
        with pytest.raises(TimeoutError):
            await session.put(
                f"{base}/research-outputs",
                json=output(sim.organization_uuids[0]),
                timeout=aiohttp.ClientTimeout(total=0.75),
            )
    assert len(sim.objects("research-outputs")) == 1


async def test_seeded_organizations_are_deterministic_and_valid(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    assert len(sim.organization_uuids) == 3
    assert PureSimulator(seed=3).organization_uuids == sim.organization_uuids
    assert PureSimulator(seed=4).organization_uuids != sim.organization_uuids
    assert len(PureSimulator(organizations=5).organization_uuids) == 5
    contract = PureContract.load()
    for uuid in sim.organization_uuids:
        response, org = await call(api, "GET", f"/organizations/{uuid}")
        assert response.status == 200
        assert org["systemName"] == "Organization"
        assert contract.validate_request_body("PUT", "/organizations/{uuid}", org) == []


async def test_custom_defined_fields_follow_the_pure_guide() -> None:
    sim = PureSimulator(
        api_key=KEY, custom_defined_fields={"persons": {"happy": "Boolean", "reason": "String"}}
    )
    async with running(sim) as api:
        _, created = await call(api, "PUT", "/persons", person(sim.organization_uuids[0]))
        # Every configured field is listed, without a value until one is set.
        assert created["customDefinedFields"] == {
            "happy": {"typeDiscriminator": "Boolean"},
            "reason": {"typeDiscriminator": "String"},
        }
        path = f"/persons/{created['uuid']}"
        body = dict(
            created, customDefinedFields={"happy": {"typeDiscriminator": "Boolean", "value": True}}
        )
        response, updated = await call(api, "PUT", path, body)
        assert response.status == 200
        # Only entries present change; leaving one out changes nothing.
        assert updated["customDefinedFields"] == {
            "happy": {"typeDiscriminator": "Boolean", "value": True},
            "reason": {"typeDiscriminator": "String"},
        }
        body = dict(updated, customDefinedFields={"mood": {"typeDiscriminator": "String"}})
        response, problem = await call(api, "PUT", path, body)
        assert_problem(response, problem, 400)
        assert [e["code"] for e in problem["errors"]] == ["unknownCustomDefinedField"]
        body = dict(
            updated, customDefinedFields={"happy": {"typeDiscriminator": "String", "value": "y"}}
        )
        response, problem = await call(api, "PUT", path, body)
        assert [e["code"] for e in problem["errors"]] == ["customDefinedFieldType"]


async def test_custom_defined_fields_are_refused_when_none_are_configured(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    body = dict(
        person(sim.organization_uuids[0]),
        customDefinedFields={"happy": {"typeDiscriminator": "Boolean", "value": True}},
    )
    response, problem = await call(api, "PUT", "/persons", body)
    assert_problem(response, problem, 400)
    assert problem_errors(problem) == [
        "$.customDefinedFields.happy: no custom-defined field 'happy'"
    ]


def test_custom_defined_fields_need_a_type_that_has_them() -> None:
    with pytest.raises(ValueError, match="journals"):
        PureSimulator(custom_defined_fields={"journals": {"happy": "Boolean"}})
    with pytest.raises(ValueError, match="Colour"):
        PureSimulator(custom_defined_fields={"persons": {"eyes": "Colour"}})


async def test_an_edit_in_pure_changes_the_object_and_its_version(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    created = await create_output(sim, api)
    sim.edit("research-outputs", created["uuid"], {"bibliographicalNote": {"en_GB": "Added"}})
    _, read = await call(api, "GET", f"/research-outputs/{created['uuid']}")
    assert read["bibliographicalNote"] == {"en_GB": "Added"}
    assert read["title"] == created["title"]
    assert read["version"] != created["version"]
    assert read["modifiedBy"] == "editor"
    with pytest.raises(ValueError, match="title"):
        sim.edit("research-outputs", created["uuid"], {"title": None})
    assert sim.objects("research-outputs")[created["uuid"]] == read


async def test_paths_outside_the_contract_are_problem_404s_and_405s(
    api: tuple[aiohttp.ClientSession, str],
) -> None:
    # Equipment and activities have no create or lock in the 2023-08 contract.
    response, problem = await call(api, "GET", "/equipment")
    assert_problem(response, problem, 404)
    response, problem = await call(api, "PATCH", "/persons")
    assert_problem(response, problem, 405)
    assert "PUT" in response.headers["Allow"]


async def test_seeded_content_is_stored_as_its_origin_made_it(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    org = sim.organization_uuids[0]
    seeded = sim.seed("persons", person(org, "0012345", "Hopper"), by="hr-sync")
    assert (seeded["createdBy"], seeded["modifiedBy"]) == ("hr-sync", "hr-sync")
    assert seeded["systemName"] == "Person"
    assert not sim.is_locked("persons", seeded["uuid"])
    response, read = await call(api, "GET", f"/persons/{seeded['uuid']}")
    assert response.status == 200
    assert read == seeded
    assert PureContract.load().validate_request_body("PUT", "/persons/{uuid}", read) == []
    # Locked content, as a synchronisation that locks what it writes leaves it.
    locked = sim.seed("persons", person(org, "0012346"), by="hr-sync", locked=True)
    assert sim.is_locked("persons", locked["uuid"])
    response, problem = await call(api, "POST", f"/persons/{locked['uuid']}/actions/lock")
    assert_problem(response, problem, 409)
    # The returned object is a copy: changing it changes nothing stored.
    seeded["name"]["lastName"] = "Changed"
    assert sim.objects("persons")[seeded["uuid"]]["name"]["lastName"] == "Hopper"


def test_seeding_is_validated_like_a_create(sim: PureSimulator) -> None:
    org = sim.organization_uuids[0]
    with pytest.raises(ValueError, match="title"):
        sim.seed("research-outputs", {**output(org), "title": None}, by="scopus-import")
    with pytest.raises(ValueError, match="unknownReference"):
        sim.seed("persons", person(MISSING), by="hr-sync")
    assert sim.objects("research-outputs") == {}
    assert sim.objects("persons") == {}


async def test_search_finds_identifiers_as_words_like_a_full_text_search(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    org = sim.organization_uuids[0]

    def doi_output(doi: str) -> dict[str, Any]:
        versions = [{"typeDiscriminator": "DoiElectronicVersion", "doi": doi}]
        return sim.seed("research-outputs", output(org, electronicVersions=versions), by="x")

    linked = doi_output("https://doi.org/10.1016/J.JCP.2019.17")
    neighbour = doi_output("10.1016/j.jcp.2020.18")
    other = doi_output("10.1371/journal.pone.4")
    hr = sim.seed("persons", person(org, "0012345"), by="hr-sync")

    async def hits(content_type: str, text: str) -> list[str]:
        _, page = await call(api, "POST", f"/{content_type}/search", {"searchString": text})
        return [item["uuid"] for item in page["items"]]

    # A DOI is words: found in any written form, first; every DOI shares some of its words
    # ("10" at least), so a search is no filter: the others follow, by words matched.
    ranked = [linked["uuid"], neighbour["uuid"], other["uuid"]]
    for written in ("10.1016/j.jcp.2019.17", "doi:10.1016/j.jcp.2019.17"):
        assert await hits("research-outputs", written) == ranked
    assert (await hits("research-outputs", "10.1371/journal.pone.4"))[0] == other["uuid"]
    assert await hits("persons", "0012345") == [hr["uuid"]]
    assert await hits("persons", "001234") == []  # a value is one word, matched whole


async def test_past_its_limits_pure_answers_429_with_when_to_come_back(
    sim: PureSimulator, api: tuple[aiohttp.ClientSession, str]
) -> None:
    now = [0.0]
    sim.throttle(per_second=2, hourly_quota=3, clock=lambda: now[0])
    org = f"/organizations/{sim.organization_uuids[0]}"
    assert [(await call(api, "GET", org))[0].status for _ in range(2)] == [200, 200]
    # A third within the second: the window slides, it does not reset on the second.
    response, problem = await call(api, "GET", org)
    assert (response.status, response.headers["Retry-After"]) == (429, "1")
    assert response.content_type == "application/problem+json"
    assert problem["status"] == 429
    now[0] = 1.5
    assert (await call(api, "GET", org))[0].status == 200
    now[0] = 3.0
    response, problem = await call(api, "GET", org)  # the hour's three are spent
    assert (response.status, response.headers["Retry-After"]) == (429, "3597")
    assert problem["detail"] == "Hourly quota of 3 requests spent."
    now[0] = 3600.0
    assert (await call(api, "GET", org))[0].status == 200
    assert sim.throttled == {"rate": 1, "quota": 1}
    assert sim.received == 6


async def test_past_its_concurrency_pure_answers_429() -> None:
    sim = PureSimulator(api_key=KEY, seed=3, latency_ms=200)
    sim.throttle(concurrent=1)
    async with running(sim) as api:
        org = f"/organizations/{sim.organization_uuids[0]}"
        answers = await asyncio.gather(call(api, "GET", org), call(api, "GET", org))
    assert sorted(response.status for response, _ in answers) == [200, 429]
    assert sim.throttled == {"concurrency": 1}
