from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from crisync.listener.elements.atom import (
    MalformedFeedError,
    parse_error,
    parse_feed,
    parse_relationships,
    parse_sources,
    parse_types,
)

FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:api="{ns}">
  <api:schema-version>5.5</api:schema-version>
  <api:pagination results-count="2" items-per-page="1">
    <api:page position="this" href="https://e.example/api/publications?per-page=1"/>
    <api:page position="next" href="https://e.example/api/publications?after-id=7&amp;per-page=1"/>
  </api:pagination>
  <link rel="next" href="https://atom-only.example/should-be-ignored"/>
  <entry>
    <title>ATOM title that must be ignored</title>
    <api:object category="publication" id="7" last-modified-when="2026-01-02T10:00:00+01:00"
        last-affected-when="2026-01-02T11:30:00.5+01:00" type="journal-article">
      <api:records><api:record format="native" source-name="manual">
        <api:native>
          <api:field name="title" type="text">
            <api:text>Protein &amp; crystals</api:text>
          </api:field>
          <api:field name="authors" type="person-list"><api:people>
            <api:person>
              <api:last-name>Blundell</api:last-name><api:initials>TL</api:initials>
            </api:person>
          </api:people></api:field>
          <api:field name="publication-date" type="date">
            <api:date><api:year>2024</api:year><api:month>3</api:month></api:date>
          </api:field>
        </api:native>
      </api:record></api:records>
    </api:object>
  </entry>
</feed>"""


@pytest.mark.parametrize(
    "ns",
    [
        "http://www.symplectic.co.uk/publications/api",
        "https://www.symplectic.co.uk/publications/api",
    ],
)
def test_reads_api_content_in_either_namespace(ns: str) -> None:
    page = parse_feed(FEED.format(ns=ns).encode())
    assert page.schema_version == "5.5"
    assert page.next_url == "https://e.example/api/publications?after-id=7&per-page=1"
    (obj,) = page.objects
    assert obj.category == "publication"
    assert obj.id == "7"
    assert obj.changed_at.isoformat() == "2026-01-02T11:30:00.500000+01:00"
    fields = obj.payload["fields"]
    assert fields["title"] == "Protein & crystals"
    assert fields["authors"] == [{"last-name": "Blundell", "initials": "TL"}]
    assert fields["publication-date"] == {"year": 2024, "month": 3}
    assert obj.payload["attributes"]["type"] == "journal-article"
    assert obj.payload["records"] == [{"source": "manual", "id_at_source": None}]


async def test_a_doctype_with_an_external_entity_is_refused_without_opening_the_file(
    tmp_path: Path,
) -> None:
    """The entity names a FIFO: opening it for reading would block until a writer comes."""
    fifo = tmp_path / "entity"
    os.mkfifo(fifo)
    hostile = (
        f'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x SYSTEM "file://{fifo}">]>'
        '<feed xmlns:api="http://www.symplectic.co.uk/publications/api">'
        "<api:schema-version>&x;</api:schema-version></feed>"
    ).encode()
    parsing = asyncio.create_task(asyncio.to_thread(parse_feed, hostile))
    try:
        async with asyncio.timeout(2):
            with pytest.raises(MalformedFeedError, match="DOCTYPE"):
                await parsing
    finally:
        # Had the parser opened the FIFO, this writer lets its thread finish.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_an_internal_entity_is_not_expanded() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<feed xmlns:api="http://www.symplectic.co.uk/publications/api">'
        b"<api:schema-version>&b;</api:schema-version></feed>"
    )
    with pytest.raises(MalformedFeedError, match="DOCTYPE"):
        parse_feed(laughs)


def test_truncated_xml_is_a_retriable_error() -> None:
    body = FEED.format(ns="http://www.symplectic.co.uk/publications/api").encode()
    with pytest.raises(MalformedFeedError) as caught:
        parse_feed(body[: len(body) // 2])
    assert caught.value.retriable


def test_a_document_without_api_content_is_refused() -> None:
    with pytest.raises(MalformedFeedError, match="no Elements API content"):
        parse_feed(b'<feed xmlns="http://www.w3.org/2005/Atom"><entry/></feed>')


def test_error_feed_gives_code_and_message() -> None:
    body = b"""<feed xmlns="http://www.w3.org/2005/Atom"
        xmlns:api="http://www.symplectic.co.uk/publications/api"><entry>
        <api:error code="argument fault">username parameter does not apply</api:error>
        </entry></feed>"""
    error = parse_error(body)
    assert error is not None
    assert (error.code, error.message) == ("argument fault", "username parameter does not apply")
    assert parse_error(b"<html>proxy error</html>") is None


@pytest.mark.parametrize("body", [b"", b"   ", b"\xff\xfe<feed/>", b"<feed>&undefined;</feed>"])
def test_garbage_is_a_malformed_feed_not_a_crash(body: bytes) -> None:
    with pytest.raises(MalformedFeedError):
        parse_feed(body)


def test_deleted_objects_and_warnings_are_read() -> None:
    body = b"""<feed xmlns="http://www.w3.org/2005/Atom"
        xmlns:api="http://www.symplectic.co.uk/publications/api">
        <api:schema-version>5.5</api:schema-version>
        <entry><api:deleted-object category="publication" id="12"
            deleted-when="2026-01-02T10:00:00.25-05:00"/></entry>
        <entry><api:warnings>
            <api:warning associated-field="isbn-13">Failed to parse ISBN-13.</api:warning>
            <api:warning>Something else.</api:warning>
        </api:warnings></entry>
        </feed>"""
    page = parse_feed(body)
    (gone,) = page.deleted
    assert (gone.category, gone.id) == ("publication", "12")
    assert gone.deleted_at.isoformat() == "2026-01-02T10:00:00.250000-05:00"
    assert [(w.field, w.message) for w in page.warnings] == [
        ("isbn-13", "Failed to parse ISBN-13."),
        (None, "Something else."),
    ]


def test_a_deleted_object_without_its_time_is_malformed() -> None:
    body = b"""<feed xmlns:api="http://www.symplectic.co.uk/publications/api">
        <api:deleted-object category="publication" id="12"/></feed>"""
    with pytest.raises(MalformedFeedError, match="deleted-when"):
        parse_feed(body)


def test_sources_and_types_are_read() -> None:
    sources = parse_sources(
        b"""<feed xmlns:api="http://www.symplectic.co.uk/publications/api"><entry><api:result>
        <api:data-source category="publication" id="2147483646" name="c-inst-1">
        <api:importable>true</api:importable></api:data-source></api:result></entry>
        <entry><api:data-source name="wos"><api:importable>false</api:importable>
        </api:data-source></entry></feed>"""
    )
    assert [(s.name, s.importable) for s in sources] == [("c-inst-1", True), ("wos", False)]
    fields = parse_types(
        b"""<feed xmlns:api="https://www.symplectic.co.uk/publications/api"><entry>
        <api:type id="2" name="book"><api:fields>
          <api:field><api:name>title</api:name><api:type>text</api:type>
            <api:update-field-operations><api:operation type="set"/>
            <api:operation type="clear"/></api:update-field-operations></api:field>
          <api:field><api:name>authors</api:name><api:type>person-list</api:type>
            </api:field>
        </api:fields></api:type></entry></feed>"""
    )
    assert [(f.type_name, f.name, f.field_type, f.operations) for f in fields] == [
        ("book", "title", "text", frozenset({"set", "clear"})),
        ("book", "authors", "person-list", frozenset()),
    ]


RELATIONSHIPS = b"""<feed xmlns="http://www.w3.org/2005/Atom"
    xmlns:api="http://www.symplectic.co.uk/publications/api">
  <api:schema-version>5.5</api:schema-version>
  <api:pagination results-count="3" items-per-page="2">
    <api:page position="next" href="https://e.example/api/relationships?after-id=902"/>
  </api:pagination>
  <entry><api:relationship id="901" type-id="8" type="publication-user-authorship">
    <api:related direction="to"><api:object category="user" id="42"
        last-modified-when="2026-01-02T10:00:00+01:00"/></api:related>
    <api:is-visible>false</api:is-visible><api:is-favourite>false</api:is-favourite>
  </api:relationship></entry>
  <entry><api:relationship id="902" type-id="9" type="publication-user-editorship">
    <api:related direction="from"><api:object category="publication" id="7"/></api:related>
    <api:related direction="to"><api:object category="user" id="43"/></api:related>
    <api:is-visible>true</api:is-visible>
  </api:relationship></entry>
  <entry><api:relationship-suggestion id="77" type-id="8" type="publication-user-authorship">
    <api:related direction="to"><api:object category="user" id="44"/></api:related>
  </api:relationship-suggestion></entry>
</feed>"""


def test_relationships_name_the_other_end_whether_or_not_the_feed_names_both() -> None:
    page = parse_relationships(RELATIONSHIPS, ("publication", "7"))
    assert page.next_url == "https://e.example/api/relationships?after-id=902"
    assert [
        (r.id, r.type, r.category, r.object_id, r.visible, r.claimed) for r in page.relationships
    ] == [
        ("901", "publication-user-authorship", "user", "42", False, True),
        ("902", "publication-user-editorship", "user", "43", True, True),
        ("77", "publication-user-authorship", "user", "44", True, False),
    ]


def test_a_relationship_relating_nothing_else_is_malformed() -> None:
    body = b"""<feed xmlns:api="http://www.symplectic.co.uk/publications/api"><entry>
        <api:relationship id="1" type="publication-user-authorship"><api:related>
        <api:object category="publication" id="7"/></api:related></api:relationship>
        </entry></feed>"""
    with pytest.raises(MalformedFeedError, match="relates no other object"):
        parse_relationships(body, ("publication", "7"))


def test_a_persons_identifiers_are_read_by_scheme() -> None:
    body = FEED.format(ns="http://www.symplectic.co.uk/publications/api").replace(
        "<api:initials>TL</api:initials>",
        "<api:initials>TL</api:initials><api:identifiers>"
        '<api:identifier scheme="orcid">0000-0002-1825-0097</api:identifier>'
        '<api:identifier scheme="scopus-author-id">7004212771</api:identifier>'
        "</api:identifiers>",
    )
    (obj,) = parse_feed(body.encode()).objects
    (author,) = obj.payload["fields"]["authors"]
    assert author["identifiers"] == {
        "orcid": "0000-0002-1825-0097",
        "scopus-author-id": "7004212771",
    }


# A user at full detail as the v5.5 document shows one (its mistyped quote mended), with
# the is-academic and primary-group-descriptor that public clients read beside it.
USER_FEED = """<feed xmlns="http://www.w3.org/2005/Atom"
    xmlns:api="http://www.symplectic.co.uk/publications/api"><entry>
  <api:object category="user" id="5" proprietary-id="3497" authenticating-authority="Internal"
      username="dwh" last-modified-when="2009-05-28T14:54:08.937+01:00" type-id="1">
    <!--User type 1 is "user"-->
    <api:ever-approved>true</api:ever-approved>
    <api:is-current-staff>true</api:is-current-staff>
    <api:is-academic>true</api:is-academic>
    <api:last-name>Hook</api:last-name>
    <api:primary-group-descriptor>Physics</api:primary-group-descriptor>
    <api:organisation-defined-data field-number="1" field-name="CID">Faculty of Natural Sciences</api:organisation-defined-data>
    <api:organisation-defined-data field-number="2" field-name="Faculty">Department of Physics</api:organisation-defined-data>
    <api:organisation-defined-data field-number="3" field-name="PrimaryHRO">Theoretical Physics Group</api:organisation-defined-data>
    <api:organisation-defined-data field-number="8" field-name="PositionName"/>
    <api:organisation-defined-data field-number="9" field-name="Status"/>
    <api:relationships href="https://localhost:8091/publications-api/users/5/relationships"/>
  </api:object>
</entry></feed>"""  # noqa: E501  # the document's lines


def test_a_users_organisation_defined_data_is_read_by_field_name() -> None:
    (user,) = parse_feed(USER_FEED.encode()).objects
    fields = user.payload["fields"]
    # Each field the site defined under its own name; the empty ones are absent, as any
    # empty element is.
    assert fields["organisation-defined-data"] == {
        "CID": "Faculty of Natural Sciences",
        "Faculty": "Department of Physics",
        "PrimaryHRO": "Theoretical Physics Group",
    }
    assert fields["is-current-staff"] == "true"
    assert fields["is-academic"] == "true"
    assert fields["primary-group-descriptor"] == "Physics"


def test_records_fields_come_by_the_configured_precedence_and_each_record_keeps_its_own() -> None:
    body = _feed_of_one_publication(
        manual={"title": "On crystals", "doi": "10.1/x"},
        scopus={"title": "On crystals.", "doi": "10.1/x", "volume": "12"},
    )
    (elements_order,) = parse_feed(body).objects
    assert elements_order.payload["fields"] == {
        "title": "On crystals",
        "doi": "10.1/x",
        "volume": "12",
    }
    (scopus_first,) = parse_feed(body, precedence=["scopus", "manual"]).objects
    assert scopus_first.payload["fields"]["title"] == "On crystals."
    assert scopus_first.payload["record_fields"] == {
        "manual": {"title": "On crystals", "doi": "10.1/x"},
        "scopus": {"title": "On crystals.", "doi": "10.1/x", "volume": "12"},
    }


def _feed_of_one_publication(**records: dict[str, str]) -> bytes:
    """A feed of one publication with a native record per source, text fields only."""
    natives = "".join(
        f'<api:record source-name="{source}" id-at-source="{n}"><api:native>'
        + "".join(
            f'<api:field name="{name}" type="text"><api:text>{value}</api:text></api:field>'
            for name, value in fields.items()
        )
        + "</api:native></api:record>"
        for n, (source, fields) in enumerate(records.items())
    )
    return (
        '<feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:api="http://www.symplectic.co.uk/publications/api"><entry>'
        '<api:object category="publication" id="7" '
        'last-affected-when="2026-11-01T12:00:00.000+00:00">'
        f"<api:records>{natives}</api:records></api:object></entry></feed>"
    ).encode()
