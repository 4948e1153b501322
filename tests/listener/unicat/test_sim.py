"""The Unicat API simulator over real loopback HTTP, and the vendor's SDK against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from crisync.listener.unicat.sim import UnicatSimulator
from tests.support.simulator_process import simulator_process
from tests.support.unicat import UNICAT_API_KEY, UNICAT_PROJECT


class Api:
    """Raw calls to the simulator, as a client with or without a JWT makes them."""

    def __init__(self, session: aiohttp.ClientSession, origin: str) -> None:
        self.session = session
        self.origin = origin
        self.jwt: str | None = None

    async def post(
        self, path: str, body: Any, *, jwt: str | None = None
    ) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
        headers = {}
        token = jwt or self.jwt
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.post(self.origin + path, json=body, headers=headers) as response:
            document = await response.json(content_type=None)
            return response.status, document, response.headers

    async def auth(self) -> str:
        status, document, headers = await self.post(
            f"/api/p/{UNICAT_PROJECT}/auth", {"api_key": UNICAT_API_KEY}
        )
        assert status == 200, document
        self.jwt = str(headers["Authorization"])
        return self.jwt

    async def sync(self, cc_cursor: int, cursor: int) -> dict[str, Any]:
        body = {"cc_cursor": cc_cursor, "project": UNICAT_PROJECT, "cursor": cursor}
        status, document, _ = await self.post("/sync/get", body)
        assert status == 200, document
        result: dict[str, Any] = document["result"]
        return result

    async def sync_all(self, cc_cursor: int = 0, cursor: int = 0) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            result = await self.sync(cc_cursor, cursor)
            for item in result["sync"]:
                items.append(item)
                if item["type"] == "cc":
                    cc_cursor = item["cursor"]
                else:
                    cursor = item["cursor"]
            if "warning" not in result:
                return items


@pytest.fixture
def sim() -> UnicatSimulator:
    return UnicatSimulator(project=UNICAT_PROJECT, api_key=UNICAT_API_KEY, records=30, page_size=8)


@pytest.fixture
async def api(sim: UnicatSimulator) -> AsyncIterator[Api]:
    from crisync.sim.server import serve

    async with serve(sim.app()) as origin, aiohttp.ClientSession() as session:
        yield Api(session, origin)


def record_path(endpoint: str) -> str:
    return f"/api/p/{UNICAT_PROJECT}{endpoint}"


async def test_auth_answers_the_jwt_in_the_authorization_header_with_project_data(
    api: Api, sim: UnicatSimulator
) -> None:
    status, document, headers = await api.post(record_path("/auth"), {"api_key": UNICAT_API_KEY})
    assert status == 200
    assert document["success"] is True
    assert headers["Authorization"].count(".") == 2  # header.payload.signature
    assert not headers["Authorization"].startswith("Bearer")
    result = document["result"]
    assert (result["cc.cursor"], result["cursor"]) == sim.latest_cursors()
    assert result["cc.version"] == sim.version
    names = {d["name"] for d in document["data"]["definitions"].values()}
    assert names == {"folder", "person", "publication"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, 400),
        ({"api_key": 42}, 400),
        ({"api_key": "wrong"}, 403),
        ({"api_key": "k", "x": 1}, 400),
    ],
)
async def test_auth_refuses_missing_or_wrong_keys(
    api: Api, body: dict[str, Any], code: int
) -> None:
    status, document, headers = await api.post(record_path("/auth"), body)
    assert status == code
    assert document == {"success": False, "result": document["result"], "data": {}}
    assert document["result"]["code"] == code
    assert "Authorization" not in headers


async def test_a_request_without_a_valid_jwt_is_401_with_www_authenticate(api: Api) -> None:
    for jwt in (None, "not.a.jwt", "garbage"):
        status, document, headers = await api.post("/sync/cursors", {}, jwt=jwt)
        assert status == 401
        assert document["result"]["code"] == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_jwt_past_half_life_is_renewed_and_expires_at_its_own_time(
    api: Api, sim: UnicatSimulator
) -> None:
    sim_lifetime = 3600
    first = await api.auth()
    status, _, headers = await api.post("/sync/cursors", {})
    assert status == 200
    assert "Authorization" not in headers  # young tokens are not renewed
    sim.advance(sim_lifetime * 0.6)
    status, _, headers = await api.post("/sync/cursors", {})
    assert status == 200
    renewed = str(headers["Authorization"])
    assert renewed != first
    sim.advance(sim_lifetime * 0.5)  # the first one is now past its expiry, the renewed one not
    status, _, _ = await api.post("/sync/cursors", {}, jwt=first)
    assert status == 401
    status, _, _ = await api.post("/sync/cursors", {}, jwt=renewed)
    assert status == 200
    sim.revoke_tokens()
    status, _, headers = await api.post("/sync/cursors", {}, jwt=renewed)
    assert status == 401
    assert "WWW-Authenticate" in headers


async def test_sync_pages_with_a_warning_until_the_history_is_read(
    api: Api, sim: UnicatSimulator
) -> None:
    await api.auth()
    first = await api.sync(0, 0)
    assert len(first["sync"]) == 8
    assert "warning" in first
    items = await api.sync_all()
    cc = [i["cursor"] for i in items if i["type"] == "cc"]
    project = [i["cursor"] for i in items if i["type"] != "cc"]
    assert cc == sorted(cc)
    assert project == sorted(project)
    assert (cc[-1], project[-1]) == sim.latest_cursors()
    inserted = {
        i["data_key"] for i in items if (i["data_type"], i["action"]) == ("records", "INSERT")
    }
    assert inserted == set(sim.record_gids())
    assert {"cc.version", "cc.users", "definitions"} <= {i["data_type"] for i in items}
    assert any(i["action"] == "UPDATE" for i in items if i["data_type"] == "records")
    assert await api.sync_all(*sim.latest_cursors()) == []


async def test_sync_without_a_project_reads_the_global_stream_only(api: Api) -> None:
    await api.auth()
    status, document, _ = await api.post("/sync/get", {"cc_cursor": 0})
    assert status == 200
    assert {item["type"] for item in document["result"]["sync"]} == {"cc"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"project": UNICAT_PROJECT, "cursor": 0}, 400),
        ({"cc_cursor": "0", "project": UNICAT_PROJECT, "cursor": 0}, 400),
        ({"cc_cursor": True, "project": UNICAT_PROJECT, "cursor": 0}, 400),
        ({"cc_cursor": 0, "project": UNICAT_PROJECT, "cursor": -1}, 400),
        ({"cc_cursor": 0, "project": UNICAT_PROJECT}, 400),
        ({"cc_cursor": 0, "project": "0b7c9e2a-1111-4222-8333-944455566677", "cursor": 0}, 403),
        ({"cc_cursor": 10**9, "project": UNICAT_PROJECT, "cursor": 0}, 1006),
        ({"cc_cursor": 0, "project": UNICAT_PROJECT, "cursor": 10**9}, 1006),
    ],
)
async def test_sync_refuses_bad_cursors(api: Api, body: dict[str, Any], code: int) -> None:
    await api.auth()
    status, document, _ = await api.post("/sync/get", body)
    assert document["success"] is False
    assert document["result"]["code"] == code
    assert status == (422 if code >= 1000 else code)


async def test_records_get_one_many_gone_and_by_language(api: Api, sim: UnicatSimulator) -> None:
    await api.auth()
    gids = sim.record_gids("person")[:2]
    status, document, _ = await api.post(record_path("/records/get"), {"record": gids[0]})
    assert status == 200
    assert document["result"] == {"record": gids[0]}
    record = document["data"]["records"][gids[0]]
    assert record["definition"] == sim.definition_gid("person")
    assert set(record["fields"]) == {"en", "nl"}
    assert {"firstname", "lastname", "email"} <= set(record["fields"]["en"])

    status, document, _ = await api.post(
        record_path("/records/get"), {"records": gids, "language": "nl"}
    )
    assert document["result"] == {"records": gids}
    assert all(set(r["fields"]) == {"nl"} for r in document["data"]["records"].values())

    sim.delete_record(gids[0])
    status, document, _ = await api.post(record_path("/records/get"), {"record": gids[0]})
    assert (status, document["result"]["code"]) == (422, 422)
    status, document, _ = await api.post(record_path("/records/get"), {"gid": gids[1]})
    assert status == 400


async def test_a_soft_delete_keeps_the_record_with_status_deleted(
    api: Api, sim: UnicatSimulator
) -> None:
    await api.auth()
    gid = sim.record_gids("person")[0]
    sim.delete_record(gid, permanent=False)
    _, document, _ = await api.post(record_path("/records/get"), {"record": gid})
    assert document["data"]["records"][gid]["status"] == "deleted"
    assert gid not in sim.record_gids()


async def test_bulk_save_as_new_reports_its_job_in_the_global_stream(
    api: Api, sim: UnicatSimulator
) -> None:
    await api.auth()
    cc, project = sim.latest_cursors()
    definitions = [sim.definition_gid("person"), sim.definition_gid("publication")]
    status, document, _ = await api.post(
        record_path("/schema/bulk/save_as_new"), {"selection": definitions}
    )
    assert status == 200
    token = document["result"]["job.token"]
    assert document["data"] == {}
    seen: list[tuple[str, int]] = []
    for _ in range(5):
        for item in (await api.sync(cc, project))["sync"]:
            assert (item["type"], item["data_type"], item["data_key"]) == ("cc", "jobs", token)
            assert item["data"]["job"] == "bulk_save_as_new_schema_items"
            seen.append((item["data"]["status"], item["data"]["info"]["remaining"]))
            cc = item["cursor"]
    assert seen == [("queued", 2), ("processing", 1), ("done", 0)]


async def test_jobs_can_be_held_and_rejected(api: Api, sim: UnicatSimulator) -> None:
    await api.auth()
    sim.hold_jobs()
    sim.reject_next_job("the schema is locked")
    token = sim.save_as_new([sim.definition_gid("person")])
    await api.sync_all()
    assert sim.job_status(token) == "queued"
    sim.hold_jobs(held=False)
    items = await api.sync_all(*sim.latest_cursors())
    assert sim.job_status(token) == "rejected"
    assert items[-1]["data"]["info"]["error"] == "the schema is locked"


@pytest.mark.parametrize(
    ("selection", "code"),
    [
        ([], 400),
        ("not a list", 400),
        (["0b7c9e2a-1111-4222-8333-944455566677"], 1006),
        ([{"children": "0b7c9e2a-1111-4222-8333-944455566677"}], 1006),
    ],
)
async def test_bulk_selection_errors(api: Api, selection: Any, code: int) -> None:
    await api.auth()
    status, document, _ = await api.post(
        record_path("/schema/bulk/save_as_new"), {"selection": selection}
    )
    assert document["result"]["code"] == code
    assert status == (422 if code >= 1000 else code)


async def test_faults_are_injected_as_envelopes_or_as_a_proxy_page(
    api: Api, sim: UnicatSimulator
) -> None:
    await api.auth()
    sim.fail_next(1002, endpoint="sync/get")
    sim.fail_next(503)
    status, document, _ = await api.post("/sync/get", {"cc_cursor": 0})
    assert (status, document["result"]["code"]) == (422, 1002)
    async with api.session.post(api.origin + "/sync/cursors", json={}) as response:
        assert response.status == 503
        assert response.content_type == "text/html"
    status, _, _ = await api.post("/sync/get", {"cc_cursor": 0})
    assert status == 200


async def test_the_cli_serves_the_simulator() -> None:
    options = ("--project", UNICAT_PROJECT, "--api-key", UNICAT_API_KEY, "--records", "5")
    async with simulator_process("unicat", *options) as run, aiohttp.ClientSession() as session:
        assert f"127.0.0.1:{run.port}" in run.banner
        api = Api(session, f"http://127.0.0.1:{run.port}")
        await api.auth()
        items = await api.sync_all()
        assert sum(i["data_type"] == "records" and i["action"] == "INSERT" for i in items) == 6
    assert run.returncode == 0


def test_the_vendor_sdk_works_against_the_simulator_unchanged(sim: UnicatSimulator) -> None:
    unicat = pytest.importorskip(
        "unicat", reason="the vendor SDK (pip install unicat) is not installed here"
    )

    async def serve_while(work: Any) -> Any:
        from crisync.sim.server import serve

        async with serve(sim.app()) as origin:
            return await asyncio.to_thread(work, origin)

    def use_sdk(origin: str) -> dict[str, Any]:
        client = unicat.Unicat(origin, UNICAT_PROJECT, UNICAT_API_KEY, None)
        assert client.connect()
        api = client.api
        assert (api.cc_cursor, api.project_cursor) == sim.latest_cursors()
        # Read the whole history, as a client starting from scratch does: sync() until no warning.
        api.cc_cursor = api.project_cursor = 0
        assert client.sync()
        assert (api.cc_cursor, api.project_cursor) == sim.latest_cursors()
        gid = sim.record_gids("person")[0]
        success, result = api.call("/records/get", {"record": gid})
        assert success, result
        record = client.get_record(gid)
        assert record.definition.name == "person"
        sim.update_record(gid, {"lastname": "Changed"})
        assert client.sync()  # an UPDATE of a record it holds: the SDK fetches it again
        changed = api.data["records"][gid]["fields"]["en"]["lastname"]
        cursor = api.prepare_for_job()
        success, result = api.call(
            "/schema/bulk/save_as_new", {"selection": [sim.definition_gid("person")]}
        )
        assert success, result
        progress = list(
            api.track_job(
                cursor, result["job.token"], timeout_in_seconds=5, poll_interval_in_seconds=0.01
            )
        )
        return {"changed": changed, "statuses": [p["status"] for p in progress]}

    outcome = asyncio.run(serve_while(use_sdk))
    assert outcome["changed"] == "Changed"
    assert outcome["statuses"][-1] == "done"
    assert outcome["statuses"][0] == "queued"


async def test_records_change_from_outside_and_the_stream_says_so(
    api: Api, sim: UnicatSimulator
) -> None:
    person = sim.record_gids("person")[0]
    session, origin = api.session, api.origin

    async def post(path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with session.post(origin + path, json=body) as response:
            return response.status, await response.json()

    before = sim.latest_cursors()[1]
    status, changed = await post(
        f"/_sim/unicat/record/{person}/touch", {"fields": {"lastname": "Lovelace"}}
    )
    assert status == 200
    assert changed["title"].endswith(" Lovelace")
    status, added = await post("/_sim/unicat/publication/add", {"fields": {"title": "Polders"}})
    assert (status, added["definition"], added["title"]) == (200, "publication", "Polders")
    assert (await post(f"/_sim/unicat/record/{person}/delete"))[0] == 200
    assert person not in sim.record_gids()
    assert sim.latest_cursors()[1] == before + 3
    assert (await post(f"/_sim/unicat/record/{person}/touch"))[0] == 404
    status, refused = await post("/_sim/unicat/person/add", {"fields": {"shoe": "42"}})
    assert status == 400
    assert "no field shoe" in refused["error"]
    assert "_sim" not in " ".join(sim.request_counts)
