from __future__ import annotations

import pytest

from crisync.listener.atom import MalformedFeedError, parse_error, parse_feed

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


def test_a_doctype_is_refused_and_no_entity_is_resolved(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    hostile = (
        f'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<feed xmlns:api="http://www.symplectic.co.uk/publications/api">'
        "<api:schema-version>&x;</api:schema-version></feed>"
    ).encode()
    with pytest.raises(MalformedFeedError, match="DOCTYPE") as caught:
        parse_feed(hostile)
    assert "TOP-SECRET" not in str(caught.value)


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
