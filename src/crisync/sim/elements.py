"""A simulator of the Symplectic Elements API v5.5 change feeds.

It serves `{api_path}/users` and `{api_path}/publications` (paginated ATOM feeds with
`affected-since` / `modified-since` filters) and `{api_path}/{users|publications}/{id}`
(one object at full detail, with ETag and Last-Modified), shaped as the v5.5 "Requests and
Responses" document shows. Where that document leaves room, the simulator picks the
awkward reading, because a kinder simulator would hide client bugs:

- strict query parsing: unknown, repeated or empty parameters, dates without an offset and
  dates containing a space (what a raw ``+`` decodes to) are argument faults;
- timestamps are rendered in varying UTC offsets, with trailing zeros of the milliseconds
  dropped (the document shows ``13:16:13.54+00:00``), and many objects share one instant;
- "affected" follows the document: a change to a publication also affects its authors
  (users) and a change to a user affects the publications they authored;
- users may lack a proprietary-id (the document's full-detail example has none), dates may
  be partial and optional fields may be missing; object ids have gaps;
- ATOM wrapping (which clients must ignore) is present and noisy, and full-detail objects
  carry an XML comment among their children, as in the document.

The clock is virtual: it only moves through `advance`, `touch` and `add`, and the HTTP
``Date`` header reports it, so a client's "server time at sweep start" is under test
control.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import random
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import cast
from urllib.parse import parse_qsl, urlencode

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from lxml import etree

ATOM_NS = "http://www.w3.org/2005/Atom"
API_NS = "http://www.symplectic.co.uk/publications/api"
XHTML_NS = "http://www.w3.org/1999/xhtml"
# lxml spells a default namespace with the key None, which lxml-stubs' nsmap type lacks.
_FEED_NSMAP = cast("dict[str, str]", {None: ATOM_NS, "api": API_NS})
_XHTML_NSMAP = cast("dict[str, str]", {None: XHTML_NS})

# Error codes as the document names them, with the HTTP status it documents for each.
ERROR_STATUS: dict[str, int] = {
    "argument fault": 400,
    "concurrency conflict": 409,
    "database timeout": 504,
    "invalid credentials": 401,
    "resource deleted": 410,
    "resource not found": 404,
    "server fault": 500,
    "unauthorised access": 403,
    "unlicensed component": 403,
}

_PLURALS = {"user": "users", "publication": "publications"}
_CATEGORIES = {plural: category for category, plural in _PLURALS.items()}

_DEFAULT_PER_PAGE = 25
_MAX_PER_PAGE = 1000
_MAX_PER_PAGE_FULL = 25

# Offsets used to render instants; the same instant shows up in different offsets.
_OFFSETS = (
    timedelta(0),
    timedelta(hours=1),
    timedelta(hours=-5),
    timedelta(hours=5, minutes=30),
)

# A strict ISO 8601 date-time that must carry an offset; up to 7 fractional digits (.NET).
_ISO_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,7})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})",
)
_UINT_RE = re.compile(r"[0-9]{1,9}")

_FIRST_NAMES = (
    "Daniel", "Mary Ann", "Jean-Luc", "Zoë", "Søren", "Ngozi", "Wei", "Priya", "Oisín",
    "Ana", "Tomasz", "Yuki", "Fatima", "Lars", "Chloé", "Rhys",
)  # fmt: skip
_LAST_NAMES = (
    "Hook", "Sutherland", "Müller", "O'Brien", "Nguyễn", "van der Berg", "García Márquez",
    "Smith", "Kowalski", "Okafor", "Ó Briain", "Chen", "Dubois", "Ivanova", "Tanaka", "Jones",
)  # fmt: skip
_TITLE_WORDS = ("Dr", "Prof", "Mr", "Ms", "Mx")
_FACULTIES = ("Natural Sciences", "Medicine", "Engineering", "Humanities", "Business School")
_ADJECTIVES = (
    "Quantum", "Sparse", "Bayesian", "Non-linear", "Early-modern", "Low-cost", "Ultrafast",
    "Robust", "Participatory", "Stochastic",
)  # fmt: skip
_NOUNS = (
    "transport", "inference", "crystallisation", "governance", "memory", "signalling",
    "phase transitions", "remittances", "fault tolerance", "photonics",
)  # fmt: skip
_CONTEXTS = (
    "CO₂ capture", "\u03b1-helical proteins", "urban Zürich", "<i>Drosophila</i> larvae",
    "the Río de la Plata basin", "1920s Québec", "graphene & hBN heterostructures",
    "sub-Saharan Africa", "\"smart\" grids", "Ōsaka's port economy",
)  # fmt: skip
_TITLE_TEMPLATES = (
    "{adj} {noun} in {ctx}",
    "On the {noun} of {ctx}",
    "{adj} {noun}: evidence from {ctx}",
    "{noun} and {noun2} of {ctx}",
)
_PUBLICATION_TYPES = ((5, "journal-article"), (4, "conference"), (2, "book"), (3, "chapter"))
_PUBLICATION_TYPE_WEIGHTS = (6, 2, 1, 1)
_LANGUAGES = ("en", "en", "en", "en", "en", "en", "en", "de", "fr", "")


@dataclass(kw_only=True)
class _Object:
    category: str
    id: int
    created: datetime
    modified: datetime
    affected: datetime


@dataclass(kw_only=True)
class _User(_Object):
    proprietary_id: str | None
    username: str
    title: str
    first_name: str
    last_name: str
    email_local: str
    cid: str | None
    faculty: str | None
    revision: int = 0

    @property
    def email(self) -> str:
        suffix = str(self.revision) if self.revision else ""
        return f"{self.email_local}{suffix}@institution.ac.uk"

    @property
    def initials(self) -> str:
        return "".join(part[0] for part in re.split(r"[ -]", self.first_name) if part)


@dataclass(kw_only=True)
class _Publication(_Object):
    record_id: str
    type_id: int
    type_name: str
    title: str
    author_ids: list[int]
    authors: list[tuple[str, str]]  # (last name, initials) as recorded at the source
    published: tuple[int, int | None, int | None] | None  # year, month, day
    language: str | None


class _ApiError(Exception):
    """An API failure, answered with the document's ATOM error feed."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = ERROR_STATUS[code] if status is None else status


def _ms(instant: datetime) -> datetime:
    """Truncate to the millisecond precision the API renders."""
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def _render_ts(instant: datetime, salt: int) -> str:
    """ISO 8601 in one of several offsets; milliseconds lose trailing zeros, as in the doc."""
    offset = _OFFSETS[salt % len(_OFFSETS)]
    local = instant.astimezone(timezone(offset))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    millis = f"{local.microsecond // 1000:03d}".rstrip("0")
    if millis:
        text += f".{millis}"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{mins:02d}"


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", folded.lower())


def _parse_iso(name: str, value: str) -> datetime:
    # A space is what a raw, unencoded "+" of an offset decodes to; refusing it is what
    # forces clients to send %2B.
    fault = _ApiError("argument fault", f"{name} value not in the correct format.")
    if not _ISO_RE.fullmatch(value):
        raise fault
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError as exc:  # well-formed but impossible, e.g. month 13
        raise fault from exc


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, tag, {k.replace("_", "-"): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _atom(tag: str) -> str:
    return f"{{{ATOM_NS}}}{tag}"


def _api(tag: str) -> str:
    return f"{{{API_NS}}}{tag}"


def _xhtml_div(parent: etree._Element, *paragraphs: str) -> None:
    div = etree.SubElement(parent, f"{{{XHTML_NS}}}div", nsmap=_XHTML_NSMAP)
    for paragraph in paragraphs:
        _sub(div, f"{{{XHTML_NS}}}p", paragraph)


def _serialise(feed: etree._Element) -> bytes:
    return etree.tostring(feed, xml_declaration=True, encoding="utf-8", pretty_print=True)


class ElementsSimulator:
    """In-memory Elements API with seeded users and publications and a virtual clock."""

    def __init__(
        self,
        *,
        objects: int = 50,
        seed: int = 1,
        latency_ms: int = 0,
        username: str = "crisync",
        password: str = "crisync-secret",  # noqa: S107  # the demo credential, not a secret
        api_path: str = "/secure-api/v5.5",
        start: datetime | None = None,
    ) -> None:
        if objects < 0:
            raise ValueError("objects must not be negative")
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = _ms((start or datetime.now(UTC)).astimezone(UTC))
        self._rng = random.Random(seed)  # noqa: S311  # reproducible demo data, not crypto
        self._latency = latency_ms / 1000
        self._username = username
        self._password = password
        self._api_path = "/" + api_path.strip("/")
        self._users: dict[int, _User] = {}
        # Kept alongside _users so that seeding 100k objects stays linear.
        self._user_ids: list[int] = []
        self._usernames: set[str] = set()
        self._publications: dict[int, _Publication] = {}
        self._next_id = {"user": self._rng.randint(1, 40), "publication": self._rng.randint(1, 400)}
        self._faults: list[_ApiError] = []
        self._truncations = 0
        self.requests: list[tuple[str, str]] = []
        self._seed(objects)

    # ----------------------------------------------------------------- test control

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._now += timedelta(seconds=seconds)

    def touch(self, category: str, object_id: int, title: str | None = None) -> None:
        obj = self._get(category, object_id)
        if isinstance(obj, _Publication):
            obj.title = title if title is not None else f"{obj.title} (revised)"
        elif isinstance(obj, _User):
            if title is not None:
                raise ValueError("only publications have a title to set")
            obj.revision += 1
        self._changed(obj)

    def add(self, category: str) -> int:
        obj: _User | _Publication
        if category == "user":
            obj = self._new_user(self._now)
            self._add_user(obj)
        elif category == "publication":
            if not self._users:
                raise ValueError("a publication needs at least one user to author it")
            obj = self._new_publication(self._now)
            self._publications[obj.id] = obj
        else:
            raise ValueError(f"unknown category {category!r}")
        obj.created = _ms(self._now)
        self._changed(obj)
        return obj.id

    def object_ids(self, category: str) -> list[int]:
        return sorted(self._store(category))

    def title_of(self, publication_id: int) -> str:
        return self._publications[publication_id].title

    def fail_next(self, status: int, code: str, count: int = 1) -> None:
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown Elements error code {code!r}")
        if not 400 <= status <= 599:
            raise ValueError("an injected failure needs an HTTP error status")
        self._faults.extend(_ApiError(code, f"Simulated {code}.", status) for _ in range(count))

    def truncate_next(self, count: int = 1) -> None:
        self._truncations += count

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        base = self._api_path
        app.router.add_get(f"{base}/{{plural:users|publications}}", self._list)
        app.router.add_get(f"{base}/{{plural:users|publications}}/{{id}}", self._one)
        app.router.add_get(f"{base}/{{tail:.*}}", self._unknown)
        return app

    # ----------------------------------------------------------------- data

    def _store(self, category: str) -> dict[int, _User] | dict[int, _Publication]:
        if category == "user":
            return self._users
        if category == "publication":
            return self._publications
        raise ValueError(f"unknown category {category!r}")

    def _get(self, category: str, object_id: int) -> _User | _Publication:
        store = self._store(category)
        if object_id not in store:
            raise KeyError(f"no {category} {object_id}")
        return store[object_id]

    def _related(self, obj: _Object) -> list[_User | _Publication]:
        if isinstance(obj, _Publication):
            return [self._users[i] for i in obj.author_ids if i in self._users]
        return [p for p in self._publications.values() if obj.id in p.author_ids]

    def _changed(self, obj: _Object) -> None:
        """Record a change now; neighbours by relationship count as affected (per the doc)."""
        instant = _ms(self._now)
        obj.modified = instant
        obj.affected = instant
        for neighbour in self._related(obj):
            neighbour.affected = instant
        self._now = instant + timedelta(milliseconds=1)

    def _allocate_id(self, category: str) -> int:
        object_id = self._next_id[category]
        # Gaps, as deleted objects leave them.
        self._next_id[category] = object_id + self._rng.randint(1, 3)
        return object_id

    def _add_user(self, user: _User) -> None:
        self._users[user.id] = user
        self._user_ids.append(user.id)
        self._usernames.add(user.username)

    def _new_user(self, modified: datetime) -> _User:
        rng = self._rng
        first = rng.choice(_FIRST_NAMES)
        last = rng.choice(_LAST_NAMES)
        taken = self._usernames
        stem = (_ascii(first)[:1] + _ascii(last))[:10]
        username, n = stem, 1
        while username in taken:
            n += 1
            username = f"{stem}{n}"
        object_id = self._allocate_id("user")
        return _User(
            category="user",
            id=object_id,
            created=_ms(modified - timedelta(days=rng.randint(30, 3000))),
            modified=modified,
            affected=modified,
            proprietary_id=None if rng.random() < 0.15 else f"{rng.randint(1000, 99999):07d}",
            username=username,
            title=rng.choice(_TITLE_WORDS),
            first_name=first,
            last_name=last,
            email_local=f"{_ascii(first)[:1]}.{_ascii(last)}",
            cid=f"CID{rng.randint(10000, 99999)}" if rng.random() < 0.7 else None,
            faculty=rng.choice(_FACULTIES) if rng.random() < 0.5 else None,
        )

    def _new_publication(self, modified: datetime) -> _Publication:
        rng = self._rng
        user_ids = self._user_ids  # ascending: ids are allocated in increasing order
        author_ids = rng.sample(user_ids, rng.randint(1, min(4, len(user_ids))))
        nouns = rng.sample(_NOUNS, 2)
        title = rng.choice(_TITLE_TEMPLATES).format(
            adj=rng.choice(_ADJECTIVES),
            noun=nouns[0],
            noun2=nouns[1],
            ctx=rng.choice(_CONTEXTS),
        )
        type_id, type_name = rng.choices(_PUBLICATION_TYPES, _PUBLICATION_TYPE_WEIGHTS)[0]
        roll = rng.random()
        year = rng.randint(1998, 2024)
        published: tuple[int, int | None, int | None] | None
        if roll < 0.7:
            published = (year, rng.randint(1, 12), rng.randint(1, 28))
        elif roll < 0.8:
            published = (year, rng.randint(1, 12), None)
        elif roll < 0.9:
            published = (year, None, None)
        else:
            published = None
        language = rng.choice(_LANGUAGES) or None
        return _Publication(
            category="publication",
            id=self._allocate_id("publication"),
            created=_ms(
                modified - timedelta(days=rng.randint(0, 900), seconds=rng.randint(1, 86400))
            ),
            modified=modified,
            affected=modified,
            record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper(),
            type_id=type_id,
            type_name=type_name,
            title=title,
            author_ids=author_ids,
            authors=[(self._users[i].last_name, self._users[i].initials) for i in author_ids],
            published=published,
            language=language,
        )

    def _seed(self, objects: int) -> None:
        if objects == 0:
            return
        rng = self._rng
        n_users = max(1, objects // 5)
        history_start = self._now - timedelta(days=rng.randint(5, 12))
        span_ms = int((self._now - history_start).total_seconds() * 1000) - 60_000
        # Fewer instants than objects: many objects share one last-modified-when, as a bulk
        # import would leave them. Some instants are whole seconds (no fraction rendered).
        pool: list[datetime] = []
        for _ in range(max(1, objects * 2 // 3)):
            instant = history_start + timedelta(milliseconds=rng.randrange(span_ms))
            pool.append(instant.replace(microsecond=0) if rng.random() < 0.2 else _ms(instant))
        for _ in range(n_users):
            user = self._new_user(rng.choice(pool))
            self._add_user(user)
        for _ in range(objects - n_users):
            publication = self._new_publication(rng.choice(pool))
            self._publications[publication.id] = publication
        # Authorship relates users and publications, so each is affected by the other's
        # latest modification.
        for publication in self._publications.values():
            for user_id in publication.author_ids:
                user = self._users[user_id]
                user.affected = max(user.affected, publication.modified)
                publication.affected = max(publication.affected, user.modified)

    # ----------------------------------------------------------------- HTTP

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self._latency:
            await asyncio.sleep(self._latency)
        try:
            self._authenticate(request)
            if self._faults:
                raise self._faults.pop(0)
            response = await handler(request)
        except _ApiError as error:
            response = self._error_response(request, error)
        if (
            self._truncations
            and response.status == 200
            and isinstance(response, web.Response)
            and isinstance(response.body, bytes)
        ):
            self._truncations -= 1
            response.body = response.body[: len(response.body) // 2]
        response.headers[hdrs.DATE] = format_datetime(self._now, usegmt=True)
        return response

    def _authenticate(self, request: web.Request) -> None:
        credentials = _basic_credentials(request.headers.get(hdrs.AUTHORIZATION, ""))
        if (
            credentials is None
            or not hmac.compare_digest(credentials[0].encode(), self._username.encode())
            or not hmac.compare_digest(credentials[1].encode(), self._password.encode())
        ):
            raise _ApiError("invalid credentials", "The credentials supplied were invalid.")

    def _query(self, request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
        """Parse the query strictly: unknown, repeated and empty parameters are faults."""
        try:
            pairs = parse_qsl(
                request.rel_url.raw_query_string, keep_blank_values=True, errors="strict"
            )
        except UnicodeDecodeError as exc:
            raise _ApiError("argument fault", "Query string is not valid UTF-8.") from exc
        query: dict[str, str] = {}
        for name, value in pairs:
            if name not in allowed:
                raise _ApiError(
                    "argument fault", f"{name} parameter does not apply to this operation."
                )
            if name in query:
                raise _ApiError("argument fault", f"{name} parameter given more than once.")
            if not value:
                raise _ApiError("argument fault", f"{name} value not in the correct format.")
            query[name] = value
        detail = query.get("detail", "ref")
        if detail not in ("ref", "full"):
            raise _ApiError("argument fault", "detail value not in the correct format.")
        return query

    def _base(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{self._api_path}"

    async def _list(self, request: web.Request) -> web.StreamResponse:
        category = _CATEGORIES[request.match_info["plural"]]
        query = self._query(
            request,
            frozenset({"affected-since", "modified-since", "detail", "per-page", "after-id"}),
        )
        detail = query.get("detail", "ref")
        per_page = _uint(query, "per-page", _DEFAULT_PER_PAGE)
        limit = _MAX_PER_PAGE_FULL if detail == "full" else _MAX_PER_PAGE
        if not 1 <= per_page <= limit:
            raise _ApiError("argument fault", f"per-page value must be between 1 and {limit}.")
        after_id = _uint(query, "after-id", 0)
        affected_since = (
            _parse_iso("affected-since", query["affected-since"])
            if "affected-since" in query
            else None
        )
        modified_since = (
            _parse_iso("modified-since", query["modified-since"])
            if "modified-since" in query
            else None
        )
        store = self._store(category)
        matches = [
            store[i]
            for i in sorted(store)
            if (affected_since is None or store[i].affected >= affected_since)
            and (modified_since is None or store[i].modified >= modified_since)
        ]
        remaining = [obj for obj in matches if obj.id > after_id]
        page = remaining[:per_page]

        base = self._base(request)
        kept = {k: v for k, v in query.items() if k != "after-id"}
        plural = _PLURALS[category]
        this_href = f"{base}/{plural}" + _qs(query)
        next_href = (
            f"{base}/{plural}" + _qs({"after-id": str(page[-1].id), **kept})
            if len(remaining) > per_page
            else None
        )

        feed = self._feed(
            request,
            feed_id=f"{self._api_path}/{plural}{_qs(query)}",
            updated=_render_now(self._now),
            term="item-list",
            subtitle=(
                f"This feed lists {len(page)} of a total of {len(matches)} results "
                f"from the following search query: {this_href}"
            ),
        )
        pagination = _sub(
            feed,
            _api("pagination"),
            results_count=str(len(matches)),
            items_per_page=str(per_page),
        )
        _sub(pagination, _api("page"), position="this", href=this_href)
        if next_href is not None:
            _sub(pagination, _api("page"), position="next", href=next_href)
        _sub(feed, _atom("link"), type="application/atom+xml", rel="self", href=this_href)
        if next_href is not None:
            _sub(feed, _atom("link"), type="application/atom+xml", rel="next", href=next_href)
        _sub(feed, _atom("title"), "Symplectic Elements search results")
        author = _sub(feed, _atom("author"))
        _sub(author, _atom("name"), "Symplectic Elements at Organisation")
        for obj in page:
            self._entry(feed, obj, base, full=detail == "full")
        return _xml_response(_serialise(feed))

    async def _one(self, request: web.Request) -> web.StreamResponse:
        category = _CATEGORIES[request.match_info["plural"]]
        raw_id = request.match_info["id"]
        query = self._query(request, frozenset({"detail"}))
        if not _UINT_RE.fullmatch(raw_id):
            raise _ApiError("argument fault", "Object identifier not in a supported format.")
        obj = self._store(category).get(int(raw_id))
        if obj is None:
            raise _ApiError("resource not found", f"The {category} {raw_id} was not found.")
        base = self._base(request)
        # The feed's ATOM timestamp is the object's, so the body (and the ETag) only change
        # when the object does.
        feed = self._feed(
            request,
            feed_id=f"{self._api_path}/{_PLURALS[category]}/{obj.id}",
            updated=_render_ts(obj.modified, obj.id),
            term="item",
            subtitle=f"This feed represents the {category} {obj.id}.",
        )
        _sub(feed, _atom("title"), "Symplectic Elements object")
        author = _sub(feed, _atom("author"))
        _sub(author, _atom("name"), "Symplectic Elements at Organisation")
        self._entry(feed, obj, base, full=query.get("detail", "full") == "full")
        body = _serialise(feed)
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        validators = {
            hdrs.ETAG: etag,
            hdrs.LAST_MODIFIED: format_datetime(obj.modified.replace(microsecond=0), usegmt=True),
        }
        if _not_modified(request, etag, obj.modified):
            return web.Response(status=304, headers=validators)
        response = _xml_response(body)
        response.headers.update(validators)
        return response

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        raise _ApiError("resource not found", f"No resource at {request.path}.")

    # ----------------------------------------------------------------- XML

    def _feed(
        self, request: web.Request, *, feed_id: str, updated: str, term: str, subtitle: str
    ) -> etree._Element:
        """The feed-level ATOM fluff the document shows; clients must ignore all of it."""
        feed = etree.Element(_atom("feed"), nsmap=_FEED_NSMAP)
        _sub(feed, _api("schema-version"), "5.5")
        label = {"item-list": "Item list", "item": "Item", "error-list": "Error list"}[term]
        _sub(
            feed,
            _atom("category"),
            scheme="http://www.symplectic.co.uk/publications/atom/feeds/",
            term=term,
            label=label,
        )
        _sub(feed, _atom("id"), f"tag:publications@organisation,2009:{feed_id}")
        _sub(feed, _atom("updated"), updated)
        _sub(
            feed,
            _atom("generator"),
            "Symplectic Elements",
            uri=f"{request.scheme}://{request.host}/",
            version="5.5",
        )
        _sub(feed, _atom("icon"), f"{self._base(request)}/symplectic.ico")
        _sub(
            feed,
            _atom("rights"),
            "This feed is the property of the Organisation, and can only be used with permission.",
        )
        _xhtml_div(_sub(feed, _atom("subtitle"), type="xhtml"), subtitle)
        return feed

    def _entry(
        self, feed: etree._Element, obj: _User | _Publication, base: str, *, full: bool
    ) -> None:
        plural = _PLURALS[obj.category]
        href = f"{base}/{plural}/{obj.id}"
        entry = _sub(feed, _atom("entry"))
        _sub(
            entry,
            _atom("id"),
            f"tag:publications@organisation,2009:{self._api_path}/{plural}/{obj.id}",
        )
        _sub(
            entry,
            _atom("category"),
            scheme="http://www.symplectic.co.uk/publications/atom/entries/",
            term="item",
            label="Item",
        )
        _sub(
            entry,
            _atom("category"),
            scheme="http://www.symplectic.co.uk/publications/categories/",
            term=obj.category,
            label=obj.category.capitalize(),
        )
        _sub(entry, _atom("updated"), _render_ts(obj.modified, obj.id + 1))
        _sub(entry, _atom("link"), type="application/atom+xml", rel="alternate", href=href)
        _sub(
            entry,
            _atom("link"),
            type="application/atom+xml",
            rel="related",
            title="Relationships",
            href=f"{href}/relationships",
        )
        if isinstance(obj, _User):
            _sub(entry, _atom("title"), f"{obj.last_name.upper()}, {obj.first_name}")
        else:
            _sub(entry, _atom("title"), obj.title)
        _xhtml_div(_sub(entry, _atom("content"), type="xhtml"), obj.category.capitalize())
        entry.append(self._object(obj, href, full=full))

    def _object(self, obj: _User | _Publication, href: str, *, full: bool) -> etree._Element:
        element = etree.Element(_api("object"), nsmap={"api": API_NS})
        element.set("category", obj.category)
        element.set("id", str(obj.id))
        if isinstance(obj, _User):
            if obj.proprietary_id is not None:
                element.set("proprietary-id", obj.proprietary_id)
            element.set("authenticating-authority", "Internal")
            element.set("username", obj.username)
        # Each timestamp gets its own offset, so equal instants rarely look equal.
        element.set("last-modified-when", _render_ts(obj.modified, obj.id))
        element.set("last-affected-when", _render_ts(obj.affected, obj.id + 2))
        element.set("href", href)
        element.set("created-when", _render_ts(obj.created, obj.id + 3))
        if isinstance(obj, _User):
            element.set("type-id", "1")
            element.set("type", "person")
        else:
            element.set("type-id", str(obj.type_id))
            element.set("type", obj.type_name)
        if not full:
            return element
        if isinstance(obj, _User):
            element.append(etree.Comment('User type 1 is "person"'))
            _sub(element, _api("ever-approved"), "true")
            _sub(element, _api("is-current-staff"), "true")
            _sub(element, _api("title"), obj.title)
            _sub(element, _api("first-name"), obj.first_name)
            _sub(element, _api("last-name"), obj.last_name)
            _sub(element, _api("email-address"), obj.email)
            _sub(
                element,
                _api("organisation-defined-data"),
                obj.cid,
                field_number="1",
                field_name="CID",
            )
            _sub(
                element,
                _api("organisation-defined-data"),
                obj.faculty,
                field_number="2",
                field_name="Faculty",
            )
        else:
            element.append(etree.Comment(f'Publication type {obj.type_id} is "{obj.type_name}"'))
            _sub(element, _api("ever-approved"), "true")
            records = _sub(element, _api("records"))
            record = _sub(
                records,
                _api("record"),
                format="native",
                source_id="1",
                source_name="manual",
                source_display_name="Manual",
                id_at_source=obj.record_id,
            )
            _native(_sub(record, _api("native")), obj)
        _sub(element, _api("relationships"), href=f"{href}/relationships")
        return element

    def _error_response(self, request: web.Request, error: _ApiError) -> web.Response:
        feed = self._feed(
            request,
            feed_id=f"{self._api_path}/last-errors",
            updated=_render_now(self._now),
            term="error-list",
            subtitle=(
                "This feed describes the errors that occured during the processing "
                "of the last request."
            ),
        )
        _sub(feed, _atom("title"), "Errors")
        author = _sub(feed, _atom("author"))
        _sub(author, _atom("name"), "Symplectic Elements at Organisation")
        entry = _sub(feed, _atom("entry"))
        _sub(
            entry, _atom("id"), f"tag:publications@organisation,2009:{self._api_path}/last-errors/1"
        )
        _sub(
            entry,
            _atom("category"),
            scheme="http://www.symplectic.co.uk/publications/atom/entries/",
            term="error",
            label="Error",
        )
        _sub(entry, _atom("updated"), _render_now(self._now))
        _sub(entry, _atom("title"), f"Error: {error.code}")
        _xhtml_div(_sub(entry, _atom("content"), type="xhtml"), error.message)
        _sub(entry, _api("error"), error.message, code=error.code)
        response = _xml_response(_serialise(feed), status=error.status)
        if error.status == 401:
            response.headers[hdrs.WWW_AUTHENTICATE] = 'Basic realm="Elements API"'
        return response


def _native(native: etree._Element, publication: _Publication) -> None:
    title = _sub(native, _api("field"), name="title", type="text", display_name="Title")
    _sub(title, _api("text"), publication.title)
    authors = _sub(
        native, _api("field"), name="authors", type="person-list", display_name="Authors"
    )
    people = _sub(authors, _api("people"))
    for last_name, initials in publication.authors:
        person = _sub(people, _api("person"))
        _sub(person, _api("last-name"), last_name)
        _sub(person, _api("initials"), initials)
    if publication.published is not None:
        year, month, day = publication.published
        field = _sub(
            native,
            _api("field"),
            name="publication-date",
            type="date",
            display_name="Publication date",
        )
        when = _sub(field, _api("date"))
        # Partial dates leave out the day, or the day and the month.
        if day is not None:
            _sub(when, _api("day"), str(day))
        if month is not None:
            _sub(when, _api("month"), str(month))
        _sub(when, _api("year"), str(year))
    if publication.language is not None:
        language = _sub(
            native, _api("field"), name="language", type="text", display_name="Language"
        )
        _sub(language, _api("text"), publication.language)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


def _uint(query: dict[str, str], name: str, default: int) -> int:
    if name not in query:
        return default
    if not _UINT_RE.fullmatch(query[name]):
        raise _ApiError("argument fault", f"{name} value not in the correct format.")
    return int(query[name])


def _qs(query: dict[str, str]) -> str:
    """A query string with every value percent-encoded (":" and "+" included)."""
    return "?" + urlencode(query) if query else ""


def _render_now(now: datetime) -> str:
    # ATOM timestamps carry 7 fractional digits in the document; only browsers read them.
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond:06d}0+00:00"


def _xml_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(
        body=body,
        status=status,
        headers={hdrs.CONTENT_TYPE: "application/xml; charset=utf-8"},
    )


def _not_modified(request: web.Request, etag: str, modified: datetime) -> bool:
    """RFC 9110 conditional GET: If-None-Match (weak comparison) wins over If-Modified-Since."""
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if_modified_since = request.headers.get(hdrs.IF_MODIFIED_SINCE)
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
    return since.tzinfo is not None and modified.replace(microsecond=0) <= since
