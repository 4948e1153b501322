"""The Elements API simulator, exercised over real loopback HTTP."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from lxml import etree
from yarl import URL

from crisync.listener.elements.atom import parse_feed
from crisync.listener.elements.sim import API_NS_HTTPS, Author, ElementsSimulator
from crisync.sim.server import serve

API = "/secure-api/v5.5"
NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "api": "http://www.symplectic.co.uk/publications/api",
}
# A fixed start makes runs comparable; real use starts at the real now.
START = datetime(2024, 6, 3, 9, 30, 15, 250000, tzinfo=UTC)
AUTH = {"Authorization": aiohttp.encode_basic_auth("crisync", "crisync-secret")}


@asynccontextmanager
async def running(sim: ElementsSimulator) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A session with valid credentials and the API base URL of the running simulator."""
    async with serve(sim.app()) as origin, aiohttp.ClientSession(headers=AUTH) as session:
        yield session, origin + API


def url(text: str) -> URL:
    # encoded=True sends the query exactly as written (a raw "+" stays a raw "+").
    return URL(text, encoded=True)


async def fetch(
    session: aiohttp.ClientSession, target: str, headers: dict[str, str] | None = None
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with session.get(url(target), headers=headers) as response:
        return response, await response.read()


def error_code(body: bytes) -> str | None:
    error = etree.fromstring(body).find("atom:entry/api:error", NS)
    return None if error is None else error.get("code")


def api_objects(root: etree._Element) -> list[etree._Element]:
    return root.findall("atom:entry/api:object", NS)


def next_href(root: etree._Element) -> str | None:
    page = root.find("api:pagination/api:page[@position='next']", NS)
    return None if page is None else page.get("href")


def when(obj: etree._Element, attribute: str) -> datetime:
    return datetime.fromisoformat(obj.get(attribute, ""))


async def walk(session: aiohttp.ClientSession, first: str) -> list[etree._Element]:
    """Every api:object reached by following next links from `first`."""
    found: list[etree._Element] = []
    target: str | None = first
    for _ in range(200):  # a loop in next links must fail the test, not hang it
        if target is None:
            return found
        response, body = await fetch(session, target)
        assert response.status == 200, body
        root = etree.fromstring(body)
        found.extend(api_objects(root))
        target = next_href(root)
    pytest.fail("next links did not end")


async def payloads(session: aiohttp.ClientSession, first: str) -> list[dict[str, Any]]:
    """Every object reached from `first`, as the client's parser reads it."""
    found: list[dict[str, Any]] = []
    target: str | None = first
    while target is not None:
        response, body = await fetch(session, target)
        assert response.status == 200, body
        page = parse_feed(body)
        found.extend(obj.payload for obj in page.objects)
        target = page.next_url
    return found


def query(**params: str) -> str:
    # Keys use "_" for "-" so they can be keyword arguments.
    return "?" + urlencode({k.replace("_", "-"): v for k, v in params.items()})


async def test_credentials_are_required() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    bad = {"Authorization": aiohttp.encode_basic_auth("crisync", "wrong")}
    async with serve(sim.app()) as origin, aiohttp.ClientSession() as session:
        for headers in ({}, bad, {"Authorization": "Bearer crisync-secret"}):
            response, body = await fetch(session, f"{origin}{API}/users", headers=headers)
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            assert error_code(body) == "invalid credentials"
        response, _ = await fetch(session, f"{origin}{API}/users", headers=AUTH)
        assert response.status == 200


async def test_seeded_population() -> None:
    sim = ElementsSimulator(objects=50, start=START)
    users, publications = sim.object_ids("user"), sim.object_ids("publication")
    assert (len(users), len(publications)) == (10, 40)
    assert users == sorted(set(users))
    assert users[0] > 0
    small = ElementsSimulator(objects=2, start=START)
    assert (len(small.object_ids("user")), len(small.object_ids("publication"))) == (1, 1)


@pytest.mark.parametrize("plural", ["users", "publications"])
async def test_pagination_walks_every_object_once(plural: str) -> None:
    sim = ElementsSimulator(objects=50, start=START)
    category = plural.removesuffix("s")
    async with running(sim) as (session, base):
        response, body = await fetch(session, f"{base}/{plural}?per-page=7")
        assert response.status == 200
        root = etree.fromstring(body)
        pagination = root.find("api:pagination", NS)
        assert pagination is not None
        assert pagination.get("results-count") == str(len(sim.object_ids(category)))
        assert pagination.get("items-per-page") == "7"
        href = next_href(root)
        assert href is not None
        assert href.startswith(f"{base}/{plural}?")
        assert "after-id=" in href
        assert "per-page=7" in href

        found = await walk(session, f"{base}/{plural}?per-page=7")
    ids = [int(obj.get("id", "")) for obj in found]
    assert ids == sim.object_ids(category)
    assert {obj.get("category") for obj in found} == {category}


async def test_last_full_page_has_no_next_link() -> None:
    sim = ElementsSimulator(objects=50, start=START)
    count = len(sim.object_ids("user"))
    async with running(sim) as (session, base):
        _, body = await fetch(session, f"{base}/users?per-page={count}")
    root = etree.fromstring(body)
    assert len(api_objects(root)) == count
    assert next_href(root) is None


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ("detail=full&per-page=25", 200),
        ("detail=full&per-page=26", 400),
        ("per-page=1000", 200),
        ("per-page=1001", 400),
        ("per-page=0", 400),
        ("per-page=-1", 400),
        ("per-page=ten", 400),
        ("detail=everything", 400),
        ("after-id=", 400),
        ("per-page=5&per-page=6", 400),
        ("colour=blue", 400),
        ("detail=%FF", 400),  # not UTF-8
        ("&detail=full", 200),  # the document's own example URL starts with "?&"
    ],
)
async def test_query_parameters_are_strict(params: str, status: int) -> None:
    sim = ElementsSimulator(objects=10, start=START)
    async with running(sim) as (session, base):
        response, body = await fetch(session, f"{base}/publications?{params}")
    assert response.status == status
    assert error_code(body) == (None if status == 200 else "argument fault")


async def test_affected_since_is_inclusive_in_any_offset() -> None:
    sim = ElementsSimulator(objects=50, start=START)
    async with running(sim) as (session, base):
        everything = await walk(session, f"{base}/publications?per-page=100")
        stamps = sorted({when(obj, "last-affected-when") for obj in everything})
        pivot = stamps[len(stamps) // 2]
        expected = {obj.get("id") for obj in everything if when(obj, "last-affected-when") >= pivot}
        # The same instant written in another offset must select the same objects.
        in_tokyo = pivot.astimezone(timezone(timedelta(hours=9))).isoformat(timespec="milliseconds")
        found = await walk(session, f"{base}/publications" + query(affected_since=in_tokyo))
        later = (pivot + timedelta(milliseconds=1)).isoformat(timespec="milliseconds")
        after = await walk(session, f"{base}/publications" + query(affected_since=later))
    assert {obj.get("id") for obj in found} == expected
    at_pivot = {obj.get("id") for obj in found if when(obj, "last-affected-when") == pivot}
    assert at_pivot
    assert {obj.get("id") for obj in after} == expected - at_pivot


async def test_raw_plus_in_a_date_is_refused() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    async with running(sim) as (session, base):
        raw, raw_body = await fetch(
            session, f"{base}/publications?affected-since=2024-06-01T10:00:00.000+01:00"
        )
        encoded, _ = await fetch(
            session, f"{base}/publications?affected-since=2024-06-01T10:00:00.000%2B01:00"
        )
    assert raw.status == 400
    assert error_code(raw_body) == "argument fault"
    assert encoded.status == 200
    assert sim.requests[0] == (
        "GET",
        f"{API}/publications?affected-since=2024-06-01T10:00:00.000+01:00",
    )


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2024-06-01T10:00:00", "2024-06-01", "2024-13-01T10:00:00Z", "1717236000"],
)
async def test_unparsable_or_offsetless_dates_are_refused(value: str) -> None:
    sim = ElementsSimulator(objects=10, start=START)
    async with running(sim) as (session, base):
        response, body = await fetch(session, f"{base}/users" + query(modified_since=value))
    assert response.status == 400
    assert error_code(body) == "argument fault"


async def test_touch_makes_a_publication_reappear_later() -> None:
    sim = ElementsSimulator(objects=50, start=START)
    publication = sim.object_ids("publication")[5]
    old_title = sim.title_of(publication)
    async with running(sim) as (session, base):
        before = {
            obj.get("id"): obj for obj in await walk(session, f"{base}/publications?per-page=100")
        }
        high_water = sim.now.isoformat(timespec="milliseconds")
        sim.advance(90)
        sim.touch("publication", publication)
        changed = await walk(
            session, f"{base}/publications" + query(affected_since=high_water, detail="full")
        )
    assert [obj.get("id") for obj in changed] == [str(publication)]
    assert when(changed[0], "last-affected-when") > when(
        before[str(publication)], "last-affected-when"
    )
    assert sim.title_of(publication) == f"{old_title} (revised)"
    title = changed[0].findtext(".//api:field[@name='title']/api:text", namespaces=NS)
    assert title == f"{old_title} (revised)"


async def test_the_same_query_sees_changes_made_since_it_was_last_asked() -> None:
    """A sweep's query is answered from a kept selection: any change must refresh it."""
    sim = ElementsSimulator(objects=50, start=START)
    since = query(affected_since=sim.now.isoformat(timespec="milliseconds"))
    async with running(sim) as (session, base):
        assert await walk(session, f"{base}/publications{since}") == []
        sim.touch("publication", sim.object_ids("publication")[0])
        added = sim.add("publication")
        touched_and_added = await walk(session, f"{base}/publications{since}")
        sim.delete("publication", added)
        after_delete = await walk(session, f"{base}/publications{since}")
    touched = str(sim.object_ids("publication")[0])
    assert [obj.get("id") for obj in touched_and_added] == [touched, str(added)]
    assert [obj.get("id") for obj in after_delete] == [touched]


async def test_touch_with_a_title_and_consecutive_changes_are_ordered() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    first, second = sim.object_ids("publication")[:2]
    sim.touch("publication", second, title="Ünïcode & <markup>")
    sim.touch("publication", first)
    async with running(sim) as (session, base):
        _, body = await fetch(session, f"{base}/publications?detail=full")
    objs = {obj.get("id"): obj for obj in api_objects(etree.fromstring(body))}
    assert when(objs[str(first)], "last-modified-when") > when(
        objs[str(second)], "last-modified-when"
    )
    title = objs[str(second)].findtext(".//api:field[@name='title']/api:text", namespaces=NS)
    assert title == "Ünïcode & <markup>"


async def test_a_change_affects_related_objects_but_does_not_modify_them() -> None:
    sim = ElementsSimulator(objects=50, start=START)
    publication = sim.object_ids("publication")[0]
    async with running(sim) as (session, base):
        _, body = await fetch(session, f"{base}/publications/{publication}")
        people = etree.fromstring(body).findall(".//api:person/api:last-name", NS)
        since = sim.now.isoformat(timespec="milliseconds")
        sim.touch("publication", publication)
        affected = await walk(session, f"{base}/users" + query(affected_since=since, detail="full"))
        modified = await walk(session, f"{base}/users" + query(modified_since=since))
    # Authors of the touched publication are affected (the document's "affected" rule) ...
    assert sorted(o.findtext("api:last-name", namespaces=NS) or "" for o in affected) == sorted(
        p.text or "" for p in people
    )
    # ... but none of them was modified.
    assert modified == []


async def test_touching_a_user_changes_their_data() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    user = sim.object_ids("user")[0]
    async with running(sim) as (session, base):
        _, before = await fetch(session, f"{base}/users/{user}")
        sim.touch("user", user)
        _, after = await fetch(session, f"{base}/users/{user}")
    old = etree.fromstring(before).find("atom:entry/api:object", NS)
    new = etree.fromstring(after).find("atom:entry/api:object", NS)
    assert old is not None
    assert new is not None
    assert new.findtext("api:email-address", namespaces=NS) != old.findtext(
        "api:email-address", namespaces=NS
    )
    assert when(new, "last-modified-when") > when(old, "last-modified-when")


async def test_add_creates_an_object_that_shows_up_as_changed() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    existing = sim.object_ids("publication")
    since = sim.now.isoformat(timespec="milliseconds")
    new_id = sim.add("publication")
    async with running(sim) as (session, base):
        changed = await walk(session, f"{base}/publications" + query(modified_since=since))
    assert new_id > max(existing)
    assert [obj.get("id") for obj in changed] == [str(new_id)]
    assert when(changed[0], "created-when") == when(changed[0], "last-modified-when")


async def test_date_header_follows_the_virtual_clock() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    async with running(sim) as (session, base):
        first, _ = await fetch(session, f"{base}/users")
        sim.advance(3600)
        second, _ = await fetch(session, f"{base}/users?per-page=1")
    assert parsedate_to_datetime(first.headers["Date"]) == START.replace(microsecond=0)
    assert parsedate_to_datetime(second.headers["Date"]) == START.replace(
        microsecond=0
    ) + timedelta(hours=1)
    assert first.headers["Content-Type"] == "application/xml; charset=utf-8"


async def test_fail_next_answers_with_error_feeds_then_recovers() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    sim.fail_next(504, "database timeout", count=2)
    async with running(sim) as (session, base):
        results = [await fetch(session, f"{base}/publications") for _ in range(3)]
    assert [response.status for response, _ in results] == [504, 504, 200]
    assert [error_code(body) for _, body in results] == ["database timeout"] * 2 + [None]


def test_fail_next_refuses_unknown_codes() -> None:
    sim = ElementsSimulator(objects=2, start=START)
    with pytest.raises(ValueError, match="unknown Elements error code"):
        sim.fail_next(500, "oops")


async def test_truncate_next_serves_malformed_xml_once() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    sim.truncate_next()
    async with running(sim) as (session, base):
        broken, broken_body = await fetch(session, f"{base}/publications")
        intact, intact_body = await fetch(session, f"{base}/publications")
    assert broken.status == 200
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(broken_body)
    assert intact.status == 200
    assert len(api_objects(etree.fromstring(intact_body))) == len(sim.object_ids("publication"))


async def test_single_object_supports_conditional_get() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    publication = sim.object_ids("publication")[0]
    target = f"/publications/{publication}"
    async with running(sim) as (session, base):
        first, body = await fetch(session, base + target)
        etag = first.headers["ETag"]
        same, same_body = await fetch(session, base + target, headers={"If-None-Match": etag})
        weak, _ = await fetch(session, base + target, headers={"If-None-Match": f"W/{etag}"})
        sim.touch("publication", publication)
        changed, _ = await fetch(session, base + target, headers={"If-None-Match": etag})
        missing, missing_body = await fetch(session, f"{base}/publications/999999")
    assert first.status == 200
    assert etag.startswith('"')
    assert parsedate_to_datetime(first.headers["Last-Modified"]).tzinfo is not None
    entries = etree.fromstring(body).findall("atom:entry", NS)
    assert len(entries) == 1
    assert entries[0].find("api:object/api:records", NS) is not None  # full detail
    assert (same.status, same_body) == (304, b"")
    assert weak.status == 304
    assert changed.status == 200
    assert changed.headers["ETag"] != etag
    assert missing.status == 404
    assert error_code(missing_body) == "resource not found"


async def test_full_detail_has_the_documented_shape() -> None:
    sim = ElementsSimulator(objects=50, start=START)
    async with running(sim) as (session, base):
        users = await walk(session, f"{base}/users?detail=full")
        publications = await walk(session, f"{base}/publications?detail=full&per-page=25")
    last_names = {u.findtext("api:last-name", namespaces=NS) for u in users}
    for user in users:
        assert user.get("type") == "person"
        assert user.findtext("api:email-address", namespaces=NS)
        assert user.find("api:organisation-defined-data[@field-name='CID']", NS) is not None
    # As in the document, a comment sits among the object's children.
    assert isinstance(users[0][0], etree._Comment)
    for publication in publications:
        native = publication.find("api:records/api:record[@format='native']/api:native", NS)
        assert native is not None
        assert native.findtext("api:field[@name='title']/api:text", namespaces=NS)
        authors = native.findall("api:field[@name='authors']/api:people/api:person", NS)
        # Up to four staff and three external co-authors.
        assert 1 <= len(authors) <= 7
        assert all(a.findtext("api:initials", namespaces=NS) for a in authors)
    people = [
        person
        for publication in publications
        for person in publication.iterfind(".//api:person", NS)
    ]
    assert {p.findtext("api:last-name", namespaces=NS) for p in people} & last_names
    orcids = [
        p.findtext("api:identifiers/api:identifier[@scheme='orcid']", namespaces=NS) for p in people
    ]
    assert any(orcids)
    dates = [p.find(".//api:field[@name='publication-date']", NS) for p in publications]
    assert None in dates  # optional fields are sometimes missing


async def test_timestamps_vary_in_offset_and_collide() -> None:
    sim = ElementsSimulator(objects=50, start=START)
    async with running(sim) as (session, base):
        found = await walk(session, f"{base}/publications?per-page=10")
    rendered = [obj.get("last-affected-when", "") for obj in found]
    assert len({text[-6:] for text in rendered}) > 1
    instants = Counter(datetime.fromisoformat(text) for text in rendered)
    shared = [instant for instant, n in instants.items() if n > 1]
    assert shared
    # One instant is written differently by different objects.
    assert any(
        len({text for text in rendered if datetime.fromisoformat(text) == instant}) > 1
        for instant in shared
    )
    assert all(datetime.fromisoformat(text) < START for text in rendered)


async def test_same_seed_gives_the_same_feed() -> None:
    async def full_feed(seed: int) -> bytes:
        sim = ElementsSimulator(objects=30, seed=seed, start=START)
        async with running(sim) as (session, base):
            _, body = await fetch(session, f"{base}/publications?detail=full")
        # The origin differs per run (port); the data must not.
        return body.replace(base.removesuffix(API).encode(), b"")

    first, again, other = await full_feed(7), await full_feed(7), await full_feed(8)
    assert first == again
    assert first != other


async def test_most_publications_have_a_doi_written_as_records_write_them() -> None:
    sim = ElementsSimulator(objects=250, start=START)
    async with running(sim) as (session, base):
        found = await payloads(session, f"{base}/publications?detail=full&per-page=25")
        first = next(p.id for p in sim.publications() if p.doi)
        _, body = await fetch(session, f"{base}/publications/{first}")
    fields = [payload["fields"] for payload in found]
    written = [f["doi"] for f in fields if "doi" in f]
    assert 0.75 < len(written) / len(fields) < 0.95
    forms = Counter(
        "link" if doi.startswith("https://doi.org/10.")
        else "prefixed" if doi.startswith("doi:10.")
        else "upper" if doi != doi.lower()
        else "bare"
        for doi in written
    )  # fmt: skip
    assert set(forms) == {"bare", "upper", "link", "prefixed"}
    assert forms["bare"] > len(written) / 2
    field = etree.fromstring(body).find(".//api:native/api:field[@name='doi']", NS)
    assert field is not None
    assert (field.get("type"), field.get("display-name")) == ("text", "DOI")
    # What a client reads is what the simulator says it holds; each DOI is its publication's.
    snapshots = {p.doi_as_written: p.doi for p in sim.publications() if p.doi}
    assert sorted(snapshots) == sorted(written)
    assert len(set(snapshots.values())) == len(written)
    assert all(bare == bare.lower() and bare.startswith("10.") for bare in snapshots.values())


async def test_some_publications_also_hold_a_scopus_record() -> None:
    sim = ElementsSimulator(objects=100, start=START)
    async with running(sim) as (session, base):
        records = await payloads(session, f"{base}/publications?detail=full&per-page=25")
    scopus = [r["id_at_source"] for p in records for r in p["records"] if r["source"] == "scopus"]
    assert 0.2 < len(scopus) / len(records) < 0.6
    assert all(re.fullmatch(r"2-s2\.0-[0-9]{11}", str(i)) for i in scopus)
    assert len(set(scopus)) == len(scopus)
    # The manual record stays first: it is the one clients read fields from and patch.
    assert all(p["records"][0]["source"] == "manual" for p in records)
    assert sorted(scopus) == sorted(p.scopus_id for p in sim.publications() if p.scopus_id)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_users_include_namesakes_with_their_own_logins(seed: int) -> None:
    sim = ElementsSimulator(objects=50, seed=seed, start=START)
    async with running(sim) as (session, base):
        users = await walk(session, f"{base}/users?detail=full")
    names = Counter(
        (u.findtext("api:last-name", namespaces=NS), u.findtext("api:first-name", namespaces=NS))
        for u in users
        if u.get("proprietary-id")
    )
    assert max(names.values()) >= 2  # namesakes both known to HR
    for attribute in ("username", "proprietary-id"):
        values = [u.get(attribute) for u in users if u.get(attribute)]
        assert len(set(values)) == len(values)
    emails = [u.findtext("api:email-address", namespaces=NS) for u in users]
    assert len(set(emails)) == len(emails)
    again = ElementsSimulator(objects=50, seed=seed, start=START)
    assert again.users() == sim.users()
    assert again.publications() == sim.publications()


def test_no_two_users_share_a_proprietary_id() -> None:
    # A thousand users draw ids from a range where some draws repeat.
    ids = [u.proprietary_id for u in ElementsSimulator(objects=5000).users() if u.proprietary_id]
    assert len(ids) > 700
    assert len(set(ids)) == len(ids)


async def test_patch_sets_a_doi() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    publication = sim.object_ids("publication")[0]
    record = sim.record_of("publication", publication)
    async with running(sim) as (session, base):
        target = f"{base}/publication/records/manual/{record}"
        response, _ = await patch(session, target, update("doi", "set", "doi:10.1/X.2"))
        _, body = await fetch(session, f"{base}/publications/{publication}")
    assert response.status == 303
    doi = etree.fromstring(body).findtext(".//api:field[@name='doi']/api:text", namespaces=NS)
    assert doi == "doi:10.1/X.2"
    assert [(p.doi, p.doi_as_written) for p in sim.publications() if p.id == publication] == [
        ("10.1/x.2", "doi:10.1/X.2")
    ]


async def test_requests_are_recorded_and_latency_applies() -> None:
    sim = ElementsSimulator(objects=4, latency_ms=150, start=START)
    async with running(sim) as (session, base):
        sim.stall_next(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await fetch(session, f"{base}/users?per-page=2")
        elapsed = loop.time() - started
    assert elapsed >= 0.15
    assert sim.requests == [("GET", f"{API}/users?per-page=2")]


# ----------------------------------------------------------------------- deletions


async def test_deleted_objects_are_listed_since_a_time_and_answer_410() -> None:
    sim = ElementsSimulator(objects=20, start=START)
    first, second, third = sim.object_ids("publication")[:3]
    sim.delete("publication", first)
    sim.advance(60)
    since = sim.now.isoformat(timespec="milliseconds")
    sim.delete("publication", second)
    sim.delete("publication", third)
    async with running(sim) as (session, base):
        everything = await walk(session, f"{base}/deleted/publications?per-page=1")
        recent = await walk(session, f"{base}/deleted/publications" + query(deleted_since=since))
        users = await walk(session, f"{base}/deleted/users")
        gone, gone_body = await fetch(session, f"{base}/publications/{second}")
        listed = await walk(session, f"{base}/publications?per-page=100")

    def deleted(root_objects: list[etree._Element]) -> list[str | None]:
        return [obj.get("id") for obj in root_objects]

    assert deleted(everything) == []  # api:deleted-object, not api:object
    assert deleted(recent) == []
    assert users == []
    assert gone.status == 410
    assert error_code(gone_body) == "resource deleted"
    assert str(second) not in {obj.get("id") for obj in listed}


def test_publications_added_after_users_were_deleted_have_living_authors() -> None:
    sim = ElementsSimulator(objects=20, seed=3, start=START)
    users = sim.object_ids("user")
    for user in users[: len(users) - 1]:
        sim.delete("user", user)
    added = [sim.add("publication") for _ in range(5)]
    authors = {
        author
        for publication in sim.publications()
        if publication.id in added
        for author in publication.author_ids
    }
    assert authors == {users[-1]}


async def test_the_deleted_feed_carries_deleted_objects_with_their_time() -> None:
    sim = ElementsSimulator(objects=20, start=START)
    victim = sim.object_ids("publication")[4]
    sim.delete("publication", victim)
    async with running(sim) as (session, base):
        _, body = await fetch(session, f"{base}/deleted/publications?per-page=5")
        since = (START + timedelta(seconds=1)).isoformat()
        _, later = await fetch(session, f"{base}/deleted/publications" + query(deleted_since=since))
        bad, bad_body = await fetch(session, f"{base}/deleted/publications?detail=full")
        # Its authors lost a relationship: they count as affected.
        authors = await walk(
            session, f"{base}/users" + query(affected_since=START.isoformat(), detail="full")
        )
    (element,) = etree.fromstring(body).findall("atom:entry/api:deleted-object", NS)
    assert (element.get("category"), element.get("id")) == ("publication", str(victim))
    assert when(element, "deleted-when") == START
    assert etree.fromstring(later).findall("atom:entry/api:deleted-object", NS) == []
    assert bad.status == 400
    assert error_code(bad_body) == "argument fault"
    assert authors


# ----------------------------------------------------------------------- categories


@pytest.mark.parametrize(
    "plural",
    ["activities", "equipment", "grants", "org-structures", "projects", "teaching-activities"],
)
async def test_every_other_category_is_served(plural: str) -> None:
    sim = ElementsSimulator(objects=10, start=START, items_per_category=3)
    async with running(sim) as (session, base):
        found = await walk(session, f"{base}/{plural}?detail=full")
        _, one = await fetch(session, f"{base}/{plural}/{found[0].get('id')}")
    assert len(found) == 3
    category = found[0].get("category")
    assert category is not None
    assert sim.object_ids(category) == sorted(int(obj.get("id", "")) for obj in found)
    title = found[0].findtext(".//api:field[@name='title']/api:text", namespaces=NS)
    assert title == sim.title_of(int(found[0].get("id", "")), category)
    assert etree.fromstring(one).find("atom:entry/api:object", NS) is not None


def test_items_do_not_change_the_seeded_users_and_publications() -> None:
    plain = ElementsSimulator(objects=30, seed=3, start=START)
    more = ElementsSimulator(objects=30, seed=3, start=START, items_per_category=4)
    assert plain.object_ids("publication") == more.object_ids("publication")
    assert [plain.title_of(p) for p in plain.object_ids("publication")] == [
        more.title_of(p) for p in more.object_ids("publication")
    ]
    assert len(more.object_ids("grant")) == 4


# ----------------------------------------------------------------------- write-back


async def test_sources_and_types_describe_what_may_be_patched() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    async with running(sim) as (session, base):
        _, sources = await fetch(session, f"{base}/publication/sources")
        _, types = await fetch(session, f"{base}/publication/types")
        equipment, _ = await fetch(session, f"{base}/equipment/types")
    importable = {
        s.get("name"): s.findtext("api:importable", namespaces=NS)
        for s in etree.fromstring(sources).iterfind(".//api:data-source", NS)
    }
    assert importable == {"manual": "true", "c-inst-1": "true", "wos": "false", "scopus": "false"}
    by_type = {
        t.get("name"): {
            f.findtext("api:name", namespaces=NS): {
                o.get("type") for o in f.iterfind("api:update-field-operations/api:operation", NS)
            }
            for f in t.iterfind("api:fields/api:field", NS)
        }
        for t in etree.fromstring(types).iterfind(".//api:type[@name]", NS)
    }
    assert by_type["journal-article"]["notes"] == {"set", "clear"}
    assert by_type["journal-article"]["keywords"] == {"set", "clear", "add", "remove"}
    assert "notes" not in by_type["conference"]
    assert equipment.status == 200  # "equipment" is its own plural: not an object id


def update(field: str, operation: str, text: str | None = None, ns: str = NS["api"]) -> bytes:
    value = f"<text>{text}</text>" if text is not None else ""
    return (
        f'<update-record xmlns="{ns}"><fields>'
        f'<field name="{field}" operation="{operation}">{value}</field>'
        "</fields></update-record>"
    ).encode()


async def patch(
    session: aiohttp.ClientSession, target: str, body: bytes, content_type: str = "text/xml"
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with session.patch(
        target, data=body, headers={"Content-Type": content_type}, allow_redirects=False
    ) as response:
        return response, await response.read()


async def test_patch_sets_a_field_and_answers_303_to_the_object() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    publication = next(
        p for p in sim.object_ids("publication") if sim.type_of("publication", p) != "conference"
    )
    record = sim.record_of("publication", publication)
    async with running(sim) as (session, base):
        target = f"{base}/publication/records/manual/{record}"
        before = sim.now
        response, _ = await patch(session, target, update("notes", "set", "pure-uuid-1"))
        status, location = response.status, response.headers.get("Location")
        _, body = await fetch(session, location or "")
    assert (status, location) == (303, f"{base}/publications/{publication}")
    notes = etree.fromstring(body).findtext(".//api:field[@name='notes']/api:text", namespaces=NS)
    assert notes == "pure-uuid-1"
    assert sim.notes_of("publication", publication) == "pure-uuid-1"
    obj = etree.fromstring(body).find("atom:entry/api:object", NS)
    assert obj is not None
    assert when(obj, "last-modified-when") >= before


@pytest.mark.parametrize(
    ("path_source", "body", "content_type", "status", "message"),
    [
        ("manual", update("notes", "set", "x"), "application/xml", 400, "text/xml"),
        ("wos", update("notes", "set", "x"), "text/xml", 400, "does not accept"),
        ("nowhere", update("notes", "set", "x"), "text/xml", 404, "No such data source"),
        ("manual", update("nonsense", "set", "x"), "text/xml", 400, "no field"),
        ("manual", update("title", "add", "x"), "text/xml", 400, "does not allow add"),
        ("manual", update("authors", "clear"), "text/xml", 400, "only updates text"),
        ("manual", update("notes", "set", ""), "text/xml", 400, "needs a text value"),
        ("manual", update("notes", "set", "x", ns=API_NS_HTTPS), "text/xml", 400, "update-record"),
        ("manual", b"<update-record", "text/xml", 400, "well-formed"),
    ],
)
async def test_patch_is_validated_as_the_server_would(
    path_source: str, body: bytes, content_type: str, status: int, message: str
) -> None:
    sim = ElementsSimulator(objects=10, start=START)
    publication = next(
        p for p in sim.object_ids("publication") if sim.type_of("publication", p) != "conference"
    )
    record = sim.record_of("publication", publication)
    async with running(sim) as (session, base):
        response, answer_body = await patch(
            session, f"{base}/publication/records/{path_source}/{record}", body, content_type
        )
    assert response.status == status
    error = etree.fromstring(answer_body).findtext("atom:entry/api:error", namespaces=NS)
    assert message in (error or "")
    assert sim.patches == []


async def test_patch_needs_the_right_to_modify_and_an_existing_record() -> None:
    sim = ElementsSimulator(objects=10, start=START, can_modify=False)
    record = sim.record_of("publication", sim.object_ids("publication")[0])
    unknown = ElementsSimulator(objects=10, start=START)
    async with running(sim) as (session, base):
        refused, _ = await patch(
            session, f"{base}/publication/records/manual/{record}", update("notes", "set", "x")
        )
    async with running(unknown) as (session, base):
        missing, _ = await patch(
            session,
            f"{base}/publication/records/manual/NO-SUCH-RECORD",
            update("notes", "set", "x"),
        )
    assert (refused.status, missing.status) == (403, 404)


async def test_patch_may_answer_200_with_the_object() -> None:
    sim = ElementsSimulator(objects=10, start=START, patch_redirect=False)
    publication = sim.object_ids("publication")[0]
    record = sim.record_of("publication", publication)
    async with running(sim) as (session, base):
        response, body = await patch(
            session,
            f"{base}/publication/records/manual/{record}",
            update("title", "set", "Retitled"),
        )
    assert response.status == 200
    assert etree.fromstring(body).find("atom:entry/api:object", NS) is not None
    assert sim.title_of(publication) == "Retitled"


# ----------------------------------------------------------------------- clock and versions


async def test_date_skew_shifts_only_the_http_date() -> None:
    sim = ElementsSimulator(objects=10, start=START, date_skew=-30)
    async with running(sim) as (session, base):
        response, _ = await fetch(session, f"{base}/users")
    assert parsedate_to_datetime(response.headers["Date"]) == START.replace(
        microsecond=0
    ) - timedelta(seconds=30)
    assert sim.now == START


async def test_a_late_commit_is_stamped_in_the_past_and_the_clock_stays() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    publication = sim.object_ids("publication")[0]
    sim.advance(100)
    stamp = START + timedelta(seconds=97)
    sim.touch("publication", publication, at=stamp)
    assert sim.now == START + timedelta(seconds=100)
    async with running(sim) as (session, base):
        _, body = await fetch(session, f"{base}/publications/{publication}")
    obj = etree.fromstring(body).find("atom:entry/api:object", NS)
    assert obj is not None
    assert when(obj, "last-affected-when") == stamp
    with pytest.raises(ValueError, match="before now"):
        sim.touch("publication", publication, at=sim.now + timedelta(seconds=1))


async def test_below_schema_5_5_there_is_no_affected() -> None:
    sim = ElementsSimulator(objects=10, start=START, schema_version="4.9")
    async with running(sim) as (session, base):
        refused, body = await fetch(
            session, f"{base}/publications" + query(affected_since=START.isoformat())
        )
        _, listed = await fetch(session, f"{base}/publications")
    assert refused.status == 400
    assert error_code(body) == "argument fault"
    root = etree.fromstring(listed)
    assert root.findtext("api:schema-version", namespaces=NS) == "4.9"
    assert all(obj.get("last-affected-when") is None for obj in api_objects(root))


async def test_the_https_namespace_can_be_served() -> None:
    sim = ElementsSimulator(objects=10, start=START, api_namespace=API_NS_HTTPS)
    async with running(sim) as (session, base):
        _, body = await fetch(session, f"{base}/users")
    root = etree.fromstring(body)
    assert root.findall("atom:entry/api:object", NS) == []
    assert root.findall(f"atom:entry/{{{API_NS_HTTPS}}}object", NS)


async def test_an_affected_object_keeps_its_etag_a_modified_one_does_not() -> None:
    sim = ElementsSimulator(objects=20, start=START)
    publication = sim.object_ids("publication")[0]
    async with running(sim) as (session, base):
        first, body = await fetch(session, f"{base}/publications/{publication}")
        for user in sim.object_ids("user"):  # one of them is an author
            sim.touch("user", user)
        _, touched = await fetch(session, f"{base}/publications/{publication}")
        affected, _ = await fetch(
            session, f"{base}/publications/{publication}", {"If-None-Match": first.headers["ETag"]}
        )
        sim.touch("publication", publication)
        modified, _ = await fetch(
            session, f"{base}/publications/{publication}", {"If-None-Match": first.headers["ETag"]}
        )
    before, after = (etree.fromstring(b).find("atom:entry/api:object", NS) for b in (body, touched))
    assert before is not None
    assert after is not None
    assert when(after, "last-affected-when") > when(before, "last-affected-when")  # affected ...
    assert (affected.status, modified.status) == (304, 200)  # ... but not a new version


# ----------------------------------------------------------------------- faults


async def test_warnings_ride_on_the_next_successful_answer() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    sim.warn_next("isbn-13", "Failed to parse valid ISBN-13.")
    async with running(sim) as (session, base):
        _, warned = await fetch(session, f"{base}/publications?per-page=2")
        _, plain = await fetch(session, f"{base}/publications?per-page=2")
    warnings = etree.fromstring(warned).findall("atom:entry/api:warnings/api:warning", NS)
    assert [(w.get("associated-field"), w.text) for w in warnings] == [
        ("isbn-13", "Failed to parse valid ISBN-13.")
    ] * 2
    assert etree.fromstring(plain).findall(".//api:warning", NS) == []


async def test_next_links_can_loop_or_name_another_host() -> None:
    sim = ElementsSimulator(objects=30, start=START)
    async with running(sim) as (session, base):
        sim.loop_next_links()
        _, first = await fetch(session, f"{base}/publications?per-page=5")
        page_two = next_href(etree.fromstring(first))
        assert page_two is not None
        _, second = await fetch(session, page_two)
        sim.next_links_on("http://elements-internal.invalid:8091")
        _, elsewhere = await fetch(session, f"{base}/publications?per-page=5")
    assert next_href(etree.fromstring(second)) == f"{base}/publications?per-page=5"
    assert (next_href(etree.fromstring(elsewhere)) or "").startswith(
        f"http://elements-internal.invalid:8091{API}/publications?after-id="
    )


async def test_serve_stall_drop_and_retry_after() -> None:
    sim = ElementsSimulator(objects=10, start=START)
    sim.serve_next(b"<!DOCTYPE feed><feed/>", headers={"X-Test": "canned"})
    sim.fail_next(503, "server fault", retry_after=12)  # faults come first
    async with running(sim) as (session, base):
        throttled, _ = await fetch(session, f"{base}/users")
        canned, canned_body = await fetch(session, f"{base}/users")
        sim.stall_next(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await fetch(session, f"{base}/users")
        stalled_for = loop.time() - started
        sim.drop_next(2)  # aiohttp repeats a dropped GET once by itself
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await fetch(session, f"{base}/users")
    assert (canned.status, canned_body, canned.headers["X-Test"]) == (
        200,
        b"<!DOCTYPE feed><feed/>",
        "canned",
    )
    assert throttled.status == 503
    assert throttled.headers["Retry-After"] == "12"
    assert stalled_for >= 0.2


async def test_a_fault_rate_fails_some_requests_with_retriable_errors() -> None:
    sim = ElementsSimulator(objects=10, start=START, fault_rate=0.5)
    async with running(sim) as (session, base):
        answers = [await fetch(session, f"{base}/users") for _ in range(40)]
    statuses = Counter(response.status for response, _ in answers)
    assert 5 < statuses[200] < 35
    assert set(statuses) <= {200, 409, 500, 504}
    with pytest.raises(ValueError, match="probability"):
        ElementsSimulator(objects=1, fault_rate=1.0)


async def test_a_served_simulator_s_clock_follows_real_time() -> None:
    frozen = ElementsSimulator(objects=2, start=START)
    following = ElementsSimulator(objects=2, start=START, wall_clock=True)
    for sim, expected in ((frozen, START), (following, datetime.now(UTC))):
        async with running(sim) as (session, base):
            response, _ = await fetch(session, f"{base}/users")
        served = parsedate_to_datetime(response.headers["Date"])
        assert abs(served - expected) < timedelta(seconds=5)


async def test_the_world_changes_from_outside_without_the_api_s_credentials() -> None:
    sim = ElementsSimulator(objects=6, seed=3, fault_rate=0.5)
    publication = sim.object_ids("publication")[0]
    control = "/_sim/elements/publication"
    async with serve(sim.app()) as origin, aiohttp.ClientSession(origin) as session:

        async def post(path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
            async with session.post(path, json=body) as response:
                return response.status, await response.json()

        status, changed = await post(f"{control}/{publication}/touch", {"title": "New"})
        assert (status, changed["id"], changed["title"]) == (200, publication, "New")
        assert sim.title_of(publication) == "New"
        status, added = await post(f"{control}/add")
        assert status == 200
        assert added["id"] in sim.object_ids("publication")
        assert (await post(f"{control}/{publication}/delete"))[0] == 200
        assert publication not in sim.object_ids("publication")
        assert (await post(f"{control}/{publication}/touch"))[0] == 404
        status, refused = await post(
            f"/_sim/elements/user/{sim.object_ids('user')[0]}/touch", {"title": "Users have none"}
        )
        assert status == 400
        assert "no title" in refused["error"]
    assert sim.requests == []  # the API saw none of it


# ----------------------------------------------------------------------- relationships


def relationship_entries(root: etree._Element, tag: str = "relationship") -> list[etree._Element]:
    return root.findall(f"atom:entry/api:{tag}", NS)


async def test_relationships_of_a_publication_page_by_page_with_visibility_at_full_detail() -> None:
    sim = ElementsSimulator(objects=0, start=START)
    users = [sim.add_user("Ann", f"Author{n}") for n in range(30)]
    paper = sim.add_publication("Big team", [])
    links = [sim.relate(paper, user, visible=n != 3) for n, user in enumerate(users)]
    sim.suggest(paper, sim.add_user("Sue", "Suggested"))
    async with running(sim) as (session, base):
        query = urlencode({"involving": f"publication({paper})", "detail": "full", "per-page": 25})
        seen: list[etree._Element] = []
        target: str | None = f"{base}/relationships?{query}"
        while target is not None:
            response, body = await fetch(session, target)
            assert response.status == 200, body
            root = etree.fromstring(body)
            seen += relationship_entries(root)
            target = next_href(root)
        too_many = urlencode(
            {"involving": f"publication({paper})", "detail": "full", "per-page": 26}
        )
        refused, refusal = await fetch(session, f"{base}/relationships?{too_many}")
        ref_response, ref_body = await fetch(session, f"{base}/publications/{paper}/relationships")
    assert [int(r.get("id", "")) for r in seen] == links  # the suggestion is not among them
    assert {r.get("type") for r in seen} == {"publication-user-authorship"}
    # The feed is about the publication: each relationship names only the other end.
    ends = [r.findall("api:related/api:object", NS) for r in seen]
    assert [(o.get("category"), int(o.get("id", ""))) for (o,) in ends] == [
        ("user", user) for user in users
    ]
    visible = [r.findtext("api:is-visible", namespaces=NS) for r in seen]
    assert visible.count("false") == 1
    assert visible[3] == "false"
    assert (refused.status, error_code(refusal)) == (400, "argument fault")
    # At reference detail (the default) neither the other end nor is-visible is there.
    (first, *_) = relationship_entries(etree.fromstring(ref_body))
    assert ref_response.status == 200
    assert first.find("api:is-visible", NS) is None
    assert first.find("api:related", NS) is None


async def test_suggestions_are_their_own_resource_and_never_relationships() -> None:
    sim = ElementsSimulator(objects=0, start=START)
    paper = sim.add_publication("Suggested", [])
    suggestion = sim.suggest(paper, sim.add_user("Sue", "Suggested"))
    sim.relate(paper, sim.add_user("Cal", "Claimed"))
    async with running(sim) as (session, base):
        pending = f"{base}/publications/{paper}/suggestions/relationships/pending?detail=full"
        _, body = await fetch(session, pending)
    (found,) = relationship_entries(etree.fromstring(body), "relationship-suggestion")
    assert int(found.get("id", "")) == suggestion
    assert relationship_entries(etree.fromstring(body)) == []


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"involving": "publication 5"}, 400, "argument fault"),
        ({"involving": "planet(5)"}, 400, "argument fault"),
        ({"involving": "publication(999999)"}, 404, "resource not found"),
        ({"types": "eight"}, 400, "argument fault"),
        ({"involving": "publication(1)", "colour": "red"}, 400, "argument fault"),
    ],
)
async def test_relationship_queries_are_parsed_strictly(
    query: dict[str, str], status: int, code: str
) -> None:
    sim = ElementsSimulator(objects=0, start=START)
    async with running(sim) as (session, base):
        response, body = await fetch(session, f"{base}/relationships?{urlencode(query)}")
    assert (response.status, error_code(body)) == (status, code)


async def test_relating_and_unrelating_affect_both_objects_and_modify_neither() -> None:
    sim = ElementsSimulator(objects=0, start=START)
    user = sim.add_user("Ann", "Author")
    paper = sim.add_publication("Affected", [])
    sim.advance(60)
    since = sim.now
    async with running(sim) as (session, base):

        async def affected(plural: str) -> list[int]:
            query = urlencode({"affected-since": since.isoformat(), "detail": "full"})
            return [int(o.get("id", "")) for o in await walk(session, f"{base}/{plural}?{query}")]

        assert (await affected("publications"), await affected("users")) == ([], [])
        link = sim.relate(paper, user)
        assert (await affected("publications"), await affected("users")) == ([paper], [user])
        sim.advance(60)
        since = sim.now
        sim.unrelate(link)
        assert (await affected("publications"), await affected("users")) == ([paper], [user])
        modified = await walk(
            session, f"{base}/publications?modified-since={since.isoformat().replace('+', '%2B')}"
        )
    assert modified == []


async def test_users_say_whether_they_are_academic_staff_and_name_their_faculty() -> None:
    sim = ElementsSimulator(objects=200, seed=11, start=START)
    async with running(sim) as (session, base):
        served = await walk(session, f"{base}/users?detail=full")
    held = {u.id: u for u in sim.users()}
    academic = {int(str(u.get("id"))): u.findtext("api:is-academic", namespaces=NS) for u in served}
    assert academic == {i: "true" if u.academic else "false" for i, u in held.items()}
    assert set(academic.values()) == {"true", "false"}  # some are not academic staff
    faculty = {
        int(str(u.get("id"))): u.findtext(
            "api:organisation-defined-data[@field-name='Faculty']", namespaces=NS
        )
        for u in served
    }
    assert faculty == {i: u.faculty or "" for i, u in held.items()}
    assert len(set(faculty.values())) > 2  # several faculties, and users without one


def test_seeded_data_has_hidden_suggested_and_external_authors_and_former_staff() -> None:
    sim = ElementsSimulator(objects=200, seed=11, start=START)
    links = [link for p in sim.object_ids("publication") for link in sim.links_of(p)]
    assert any(not visible for _, _, visible, _ in links)
    assert any(suggested for _, _, _, suggested in links)
    publications = sim.publications()
    assert any(len(p.authors) > len(sim.links_of(p.id)) for p in publications)  # externals
    orcids = [a.orcid for p in publications for a in p.authors if a.orcid is not None]
    assert orcids
    assert all(re.fullmatch(r"[0-9]{4}(-[0-9]{4}){2}-[0-9]{3}[0-9X]", o) for o in orcids)
    users = sim.users()
    assert any(not u.current_staff for u in users)
    assert any(u.current_staff for u in users)
    # A record may write fewer initials than the first names of a user it links give.
    by_id = {u.id: u for u in users}
    assert any(
        Author(by_id[user].last_name, by_id[user].initials[0]) in p.authors
        and Author(by_id[user].last_name, by_id[user].initials) not in p.authors
        for p in publications
        for _, user, _, _ in sim.links_of(p.id)
        if len(by_id[user].initials) > 1
    )
