"""Hostile input: every input gives a result or a classified error, never an unhandled one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crisync.config import ConfigError, load_config
from crisync.errors import CrisyncError
from crisync.listener.atom import parse_error, parse_feed
from tests.reliability.conftest import Scale

API = "http://www.symplectic.co.uk/publications/api"

# Pieces of real feeds, recombined: well-formed, truncated, nested wrongly, with odd values.
FRAGMENTS = [
    f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:api="{API}">',
    "</feed>",
    "<api:schema-version>5.5</api:schema-version>",
    '<api:pagination results-count="2" items-per-page="1">',
    "</api:pagination>",
    '<api:page position="next" href="https://e.example/x?after-id=1"/>',
    "<entry>",
    "</entry>",
    '<api:object category="publication" id="7" last-affected-when="2026-01-02T11:30:00+01:00">',
    '<api:object category="user" id="x" last-affected-when="not a date">',
    '<api:object category="publication" id="8" last-affected-when="2026-01-02T11:30:00">',
    "</api:object>",
    '<api:records><api:record source-name="manual"><api:native>',
    "</api:native></api:record></api:records>",
    '<api:field name="title" type="text"><api:text>T &amp; t</api:text></api:field>',
    '<api:field name="publication-date" type="date"><api:date><api:year>20x4</api:year>'
    "</api:date></api:field>",
    '<api:field name="authors" type="person-list"><api:people><api:person>'
    "<api:last-name>A</api:last-name></api:person></api:people></api:field>",
    '<api:error code="argument fault">bad</api:error>',
    '<!DOCTYPE feed [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    "&x;",
    "<![CDATA[ <api:object/> ]]>",
    "\x00",
    "\ufeff",
    "<?xml version='1.0' encoding='latin-1'?>",
]


OBJECT = (
    '<entry><api:object category="{category}" id="{id}" last-affected-when="{stamp}">'
    "<api:first-name>{text}</api:first-name>"
    '<api:records><api:record source-name="manual"><api:native>'
    '<api:field name="{field}" type="{type}"><api:text>{text}</api:text></api:field>'
    "</api:native></api:record></api:records></api:object></entry>"
)


def _escaped(text: str) -> str:
    cleaned = "".join(c for c in text if c.isprintable())
    return (
        cleaned.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


@st.composite
def _well_formed_feeds(draw: st.DrawFn) -> bytes:
    """Valid XML in the API's shape with unexpected values: it must parse or be refused."""
    entries = draw(
        st.lists(
            st.builds(
                OBJECT.format,
                category=st.sampled_from(["user", "publication", "grant", ""]).map(_escaped),
                id=st.one_of(st.integers(-5, 10**12).map(str), st.text(max_size=8).map(_escaped)),
                stamp=st.one_of(
                    st.datetimes().map(lambda d: d.isoformat() + "+01:00"),
                    st.text(max_size=25).map(_escaped),
                ),
                field=st.sampled_from(["title", "authors", "publication-date", "x"]),
                type=st.sampled_from(["text", "date", "person-list", "unknown"]),
                text=st.text(max_size=30).map(_escaped),
            ),
            max_size=5,
        )
    )
    return (
        f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:api="{API}">'
        f"<api:schema-version>5.5</api:schema-version>{''.join(entries)}</feed>"
    ).encode()


def _xml_documents() -> st.SearchStrategy[bytes]:
    pieces = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=30)
    return st.one_of(
        _well_formed_feeds(),
        pieces.map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass")),
        st.binary(max_size=400),
    )


def _fuzz(scale: Scale) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=scale.fuzz_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def test_feed_parser_never_fails_unclassified(scale: Scale, report: Callable[[str], None]) -> None:
    outcomes = {"parsed": 0, "classified": 0}

    @_fuzz(scale)
    @given(_xml_documents())
    def check(document: bytes) -> None:
        try:
            parse_feed(document)
        except CrisyncError:
            outcomes["classified"] += 1
        else:
            outcomes["parsed"] += 1
        parse_error(document)  # never raises: an unreadable body is simply no error feed

    check()
    report(
        f"feed documents: {outcomes['parsed']} parsed, {outcomes['classified']} refused "
        "with a classified error, 0 unhandled"
    )
    assert outcomes["classified"] > 0
    assert outcomes["parsed"] > 0


def test_an_external_entity_reads_no_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("NEVER-READ")
    for doctype in (
        f'<!DOCTYPE feed [<!ENTITY x SYSTEM "file://{secret}">]>',
        f'<!DOCTYPE feed SYSTEM "file://{secret}">',
        f'<!DOCTYPE feed [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>',
    ):
        document = (
            f'<?xml version="1.0"?>{doctype}<feed xmlns:api="{API}">'
            "<api:schema-version>&x;</api:schema-version></feed>"
        ).encode()
        with pytest.raises(CrisyncError) as caught:
            parse_feed(document)
        assert "NEVER-READ" not in str(caught.value)


def test_a_billion_laughs_is_refused_quickly() -> None:
    laughs = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    document = (
        f'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY l0 "lol">{laughs}]>'
        f'<feed xmlns:api="{API}"><api:schema-version>&l9;</api:schema-version></feed>'
    )
    with pytest.raises(CrisyncError, match="DOCTYPE"):
        parse_feed(document.encode())


KEYS = {
    "state": ["path"],
    "daemon": ["shutdown_timeout", "log_format", "log_level"],
    "elements": [
        "url",
        "username",
        "categories",
        "poll_interval",
        "lookback",
        "per_page",
        "request_gap",
        "timeout",
        "password",
    ],
    "pure": ["url", "managing_organization", "concurrency", "timeout", "max_attempts", "api_key"],
    "mqtt": ["url", "topic_prefix", "client_id", "username", "password"],
    "nonsense": ["x"],
}
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.lists(st.text(max_size=10), max_size=3),
    st.sampled_from(["https://e.example/api", "mqtt://localhost:1883", "users", "json", "-1"]),
)


def _toml_value(value: object) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


@st.composite
def _configurations(draw: st.DrawFn) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), unique=True, max_size=6)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(KEYS[section]), unique=True)):
            lines.append(f"{key} = {_toml_value(draw(VALUES))}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines)


def test_config_loader_reports_problems_never_crashes(
    tmp_path: Path, scale: Scale, report: Callable[[str], None]
) -> None:
    outcomes = {"valid": 0, "refused": 0}
    path = tmp_path / "crisync.toml"
    env = {"CRISYNC_ELEMENTS_PASSWORD": "canary-e", "CRISYNC_PURE_API_KEY": "canary-p"}

    @_fuzz(scale)
    @given(_configurations())
    def check(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        problems: list[str] = []
        try:
            load_config(str(path), env=env)
        except ConfigError as exc:
            problems = exc.problems
        outcomes["refused" if problems else "valid"] += 1
        assert not any("canary" in problem for problem in problems)

    check()
    report(
        f"configurations: {outcomes['valid']} valid, {outcomes['refused']} refused with "
        "their problems listed, 0 unhandled"
    )
    assert outcomes["refused"] > 0
