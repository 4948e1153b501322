"""Hostile input: every input gives a result or a classified error, never an unhandled one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crisync.config.load import ConfigError, load_config
from crisync.errors import CrisyncError
from crisync.listener.elements.atom import parse_error, parse_feed
from crisync.sim.server import serve
from crisync.state import cursors
from crisync.state.store import Store
from tests.reliability.conftest import Scale
from tests.support.unicat import UNICAT_PROJECT, listener_for, unicat_settings

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


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
SYNC_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["cc", "project", ""]) | JSON,
        "cursor": st.integers(-5, 2**63) | JSON,
        "action": st.sampled_from(["INSERT", "UPDATE", "DELETE"]) | JSON,
        "data_type": st.sampled_from(["records", "jobs", "definitions", "cc.version"]) | JSON,
        "data_key": st.sampled_from(["r1", "r2"]) | JSON,
        "data": JSON,
    },
)
RECORD = st.fixed_dictionaries(
    {},
    optional={
        "gid": st.sampled_from(["r1", "r2"]) | JSON,
        "definition": st.sampled_from(["d1"]) | JSON,
        "fields": st.dictionaries(st.sampled_from(["en", "nl"]), JSON) | JSON,
        "title": JSON,
        "status": st.sampled_from(["deleted", "active"]) | JSON,
        "updated_on": st.integers(-(2**70), 2**70) | st.floats() | JSON,
    },
)


@st.composite
def _unicat_answers(draw: st.DrawFn) -> dict[str, Any]:
    """What a hostile Unicat answers to /sync/get, /records/get and /definitions/get."""

    def envelope(result: object, data: object) -> object:
        return draw(
            st.sampled_from(
                [
                    {"success": True, "result": result, "data": data},
                    {
                        "success": False,
                        "result": {
                            "code": draw(st.integers(0, 1010)),
                            "message": draw(JSON),
                            "info": draw(JSON),
                        },
                    },
                ]
            )
            | JSON
        )

    return {
        "sync": envelope(
            {
                "sync": draw(st.lists(SYNC_ITEM, max_size=5)),
                **({"warning": "more"} if draw(st.booleans()) else {}),
            },
            {},
        ),
        "records": envelope({}, {"records": {"r1": draw(RECORD), "r2": draw(RECORD)}}),
        "definitions": envelope({}, {"definitions": {"d1": {"name": draw(JSON)}}}),
        "status": draw(st.sampled_from([200, 200, 200, 401, 422, 500, 503])),
    }


def _hostile_unicat(answers: dict[str, Any]) -> web.Application:
    async def auth(_: web.Request) -> web.Response:
        return web.json_response(
            {"success": True, "result": {}, "data": {}},
            headers={"Authorization": "Bearer fuzz.jwt.token"},
        )

    def answer(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_: web.Request) -> web.Response:
            return web.json_response(answers[name], status=answers["status"])

        return handler

    app = web.Application()
    app.router.add_post(f"/api/p/{UNICAT_PROJECT}/auth", auth)
    app.router.add_post("/sync/get", answer("sync"))
    app.router.add_post(f"/api/p/{UNICAT_PROJECT}/records/get", answer("records"))
    app.router.add_post(f"/api/p/{UNICAT_PROJECT}/definitions/get", answer("definitions"))
    return app


def test_unicat_listener_never_fails_unclassified(
    tmp_path: Path, scale: Scale, report: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crisync.backoff.full_jitter", lambda *_, **__: 0.0)
    outcomes = {"read": 0, "classified": 0}

    async def poll_once(answers: dict[str, Any], state: Path) -> None:
        async with (
            serve(_hostile_unicat(answers)) as origin,
            Store.open(state) as store,
            aiohttp.ClientSession() as session,
        ):
            settings = unicat_settings(origin, data_types=["records", "definitions"])
            listener = listener_for(session, settings, store)
            # poll() records a failure on the feed instead of raising it.
            await listener.poll()
            async with store.reading() as conn:
                failure = (await cursors.get(conn, listener.feed)).last_error
            outcomes["classified" if failure else "read"] += 1

    @_fuzz(Scale(0, 0, 0, max(50, scale.fuzz_examples // 3)))
    @given(_unicat_answers())
    def check(answers: dict[str, Any]) -> None:
        asyncio.run(
            poll_once(answers, tmp_path / f"state-{outcomes['read'] + outcomes['classified']}.db")
        )

    check()
    report(
        f"Unicat answers: {outcomes['read']} read, {outcomes['classified']} refused with a "
        "classified error, 0 unhandled"
    )
    assert outcomes["read"] > 0
    assert outcomes["classified"] > 0


async def test_more_waiting_without_progress_is_no_hot_loop(tmp_path: Path) -> None:
    answers = {
        "sync": {"success": True, "result": {"sync": [], "warning": "more"}, "data": {}},
        "records": {},
        "definitions": {},
        "status": 200,
    }
    async with (
        serve(_hostile_unicat(answers)) as origin,
        Store.open(tmp_path / "state.db") as store,
        aiohttp.ClientSession() as session,
    ):
        listener = listener_for(session, unicat_settings(origin), store)
        async with asyncio.timeout(10):
            result = await listener.poll()
        async with store.reading() as conn:
            failure = (await cursors.get(conn, listener.feed)).last_error
    assert not result.complete
    assert failure is not None
    assert "moved no cursor" in failure
