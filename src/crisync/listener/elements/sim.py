"""A simulator of the Symplectic Elements API v5.5: change feeds, deletions and write-back.

It serves, for every object category (users, publications, grants, equipment, projects,
activities, teaching-activities, org-structures), shaped as the v5.5 "Requests and
Responses" and "PATCH record" documents show:

- `{api_path}/{plural}`: paginated ATOM feeds with `affected-since` / `modified-since`;
- `{api_path}/{plural}/{id}`: one object at full detail, with ETag and Last-Modified (304);
- `{api_path}/deleted/{plural}?deleted-since=`: the objects deleted since then;
- `{api_path}/relationships?involving={category}({id})` and
  `{api_path}/{plural}/{id}/relationships`: the relationships of an object (authorship,
  editorship), `is-visible` included at full detail;
  `{api_path}/{plural}/{id}/suggestions/relationships/pending`: links Elements suggested
  and nobody claimed yet;
- `{api_path}/{category}/sources` and `/{category}/types`, and
  `PATCH {api_path}/{category}/records/{source}/{proprietary-id}` with an `update-record`
  document (answered, by default, with a 303 to the object).

Where the documents leave room, the simulator picks the awkward reading, because a kinder
simulator would hide client bugs:

- strict query parsing: unknown, repeated or empty parameters, dates without an offset and
  dates containing a space (what a raw ``+`` decodes to) are argument faults;
- timestamps are rendered in varying UTC offsets, with trailing zeros of the milliseconds
  dropped (the document shows ``13:16:13.54+00:00``), and many objects share one instant;
- "affected" follows the document: a change to a publication also affects its authors
  (users) and a change to a user affects the publications they authored;
- users may lack a proprietary-id (the document's full-detail example has none), dates may
  be partial and optional fields may be missing; object ids have gaps; some users are no
  longer current staff, some are not academic staff (`is-academic`, which the document's
  examples leave out and real users carry, as public clients read it), and a user's
  organisation-defined data names its Faculty or leaves it empty;
- authorship is a relationship, not a name: some are hidden by their user (is-visible
  false), some only suggested; author lists name external co-authors too (often with an
  ORCID), who may share a staff member's name, and may write a user's initials shorter than
  their first names give;
- a relationship feed for one object leaves that object out of each relationship;
- most publications have a DOI, written the various ways records write them (upper case,
  ``https://doi.org/...``, ``doi:...``); some also hold a Scopus record; two users share a
  name (with usernames and e-mail addresses of their own);
- ATOM wrapping (which clients must ignore) is present and noisy, and full-detail objects
  carry an XML comment among their children, as in the document.

The clock is virtual: it only moves through `advance`, `touch`, `add`, `delete` and the
relationship controls (`relate`, `suggest`, `unrelate`, `set_visible`), and
the HTTP ``Date`` header reports it (shifted by `date_skew`, as a web server whose clock
differs from the database's would), so a client's "server time at sweep start" is under
test control. A change can be stamped in the past (`touch(..., at=)`), as a transaction
that commits late leaves it.

Faults are injected by method (`fail_next`, `truncate_next`, `serve_next`, `stall_next`,
`drop_next`, `warn_next`, `loop_next_links`, `next_links_on`) or at random (`fault_rate`),
and older servers by `schema_version` (below 5.5 there is no "affected").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import hashlib
import hmac
import random
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Protocol, TypeVar, cast
from urllib.parse import parse_qsl, urlencode

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from lxml import etree

from crisync.sim.journals import JOURNALS
from crisync.sim.server import CONTROL_PATH, control_body, control_route

ATOM_NS = "http://www.w3.org/2005/Atom"
API_NS = "http://www.symplectic.co.uk/publications/api"
# The schema document names this one too; a server may answer in either.
API_NS_HTTPS = "https://www.symplectic.co.uk/publications/api"
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

_PLURALS = {
    "activity": "activities",
    "equipment": "equipment",
    "grant": "grants",
    "org-structure": "org-structures",
    "project": "projects",
    "publication": "publications",
    "teaching-activity": "teaching-activities",
    "user": "users",
}
_CATEGORIES = {plural: category for category, plural in _PLURALS.items()}
# Categories without a richer model here: each object is a titled record of some type.
_ITEM_TYPES: dict[str, tuple[tuple[int, str], ...]] = {
    "activity": ((1, "invited-talk"), (2, "membership")),
    "equipment": ((1, "instrument"),),
    "grant": ((1, "grant"), (2, "studentship")),
    "org-structure": ((1, "department"),),
    "project": ((1, "project"),),
    "teaching-activity": ((1, "course-taught"),),
}

# Data sources: (name, id, importable, display name). "manual" holds every object's first
# record, the one write-back patches; some publications also hold a Scopus record.
_SOURCES = (
    ("manual", 1, True, "Manual"),
    ("c-inst-1", 2147483646, True, "Local Source 1"),
    ("wos", 3, False, "Web of Science"),
    ("scopus", 4, False, "Scopus"),
)
_RECORD_SOURCE = "manual"
_SCOPUS_SOURCE = _SOURCES[3]
# Record fields by category: (name, field type, update operations), as /{cat}/types lists them.
_SET_CLEAR = ("set", "clear")
_FIELDS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "publication": (
        ("title", "text", _SET_CLEAR),
        ("authors", "person-list", ("set", "clear", "add")),
        ("publication-date", "date", _SET_CLEAR),
        ("language", "text", _SET_CLEAR),
        ("notes", "text", _SET_CLEAR),
        ("keywords", "keyword-list", ("set", "clear", "add", "remove")),
        ("doi", "text", _SET_CLEAR),
    ),
    "user": (),
}
_ITEM_FIELDS = (
    ("title", "text", _SET_CLEAR),
    ("notes", "text", _SET_CLEAR),
    ("start-date", "date", _SET_CLEAR),
)
# Types that lack a field the others have: a write-back must not assume every type has it.
_TYPE_LACKS = {("publication", "conference"): frozenset({"notes"})}
_UPDATE_OPERATIONS = frozenset({"set", "clear", "add", "remove"})

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
# The Object Identifier Format: {category}({generalised-id}).
_INVOLVING_RE = re.compile(r"([a-z-]+)\(([^()]+)\)")

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
# DOIs: registrant prefixes and journal codes of real publishers, so that DOIs share words.
_DOI_PREFIXES = ("10.1016", "10.1038", "10.1103", "10.1371", "10.1093", "10.1007", "10.1002")
_DOI_CODES = ("j.jcp", "s41586", "physrevb", "journal.pone", "mnras", "s00220", "adma")
_DOI_SHARE = 0.85
_SCOPUS_SHARE = 0.4
# Relationship types by their /relationship/types number.
AUTHORSHIP = "publication-user-authorship"
_RELATIONSHIP_TYPES = {8: AUTHORSHIP, 9: "publication-user-editorship"}
_TYPE_IDS = {name: type_id for type_id, name in _RELATIONSHIP_TYPES.items()}
# What seeded data holds beside plain authorship, each from its own random stream.
_HIDDEN_SHARE = 0.08  # an authorship its user hid from their profile
_SUGGESTED_SHARE = 0.08  # a link Elements suggested and nobody claimed
_EXTERNALS_SHARE = 0.4  # publications naming external co-authors
_ORCID_SHARE = 0.5  # external co-authors whose record entry carries an ORCID
_SHORT_INITIALS_SHARE = 0.5  # "Mary Ann" recorded as "M" instead of "MA"
_FORMER_STAFF_SHARE = 0.1  # users whose is-current-staff is false
_NON_ACADEMIC_SHARE = 0.2  # users whose is-academic is false: administrators, technicians


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
    current_staff: bool = True
    academic: bool = True

    @property
    def email(self) -> str:
        suffix = str(self.revision) if self.revision else ""
        return f"{self.email_local}{suffix}@institution.ac.uk"

    @property
    def initials(self) -> str:
        return "".join(part[0] for part in re.split(r"[ -]", self.first_name) if part)


@dataclass(kw_only=True)
class _Recorded(_Object):
    """An object holding one native record from the manual source."""

    record_id: str
    type_id: int
    type_name: str
    title: str
    notes: str | None = None  # set by PATCH


@dataclass(frozen=True)
class Author:
    """A person entry of a publication's record, as the source wrote it."""

    last_name: str
    initials: str
    orcid: str | None = None


@dataclass(kw_only=True)
class _Publication(_Recorded):
    author_ids: list[int]  # the users its author list was drawn from
    authors: list[Author]  # as recorded at the source: staff and external co-authors
    published: tuple[int, int | None, int | None] | None  # year, month, day
    language: str | None
    doi: str | None = None  # as the record writes it: "10.x/y", "doi:10.x/y", upper case, ...
    scopus_id: str | None = None  # the Scopus record's id-at-source, "2-s2.0-" and 11 digits


@dataclass(kw_only=True)
class _Item(_Recorded):
    started: tuple[int, int] | None  # year, month


@dataclass(kw_only=True)
class _Link:
    """A relationship between a publication and a user, or a pending suggestion of one."""

    id: int
    type_id: int
    publication_id: int
    user_id: int
    created: datetime
    modified: datetime
    visible: bool = True
    suggested: bool = False


_Any = _User | _Publication | _Item
# A list query's category, affected-since and modified-since.
_ListQuery = tuple[str, datetime | None, datetime | None]


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


# What a feed pages through (objects, relationships, deletions): in id order, after-id paged.
_Paged = TypeVar("_Paged", bound=_HasId)


@dataclass(frozen=True)
class UserSnapshot:
    """A user as the simulator holds it now, for building a matching Pure (the site)."""

    id: int
    proprietary_id: str | None
    first_name: str
    last_name: str
    initials: str
    email: str
    faculty: str | None
    current_staff: bool = True
    academic: bool = True


@dataclass(frozen=True)
class PublicationSnapshot:
    """A publication as the simulator holds it now, for building a matching Pure."""

    id: int
    type_name: str
    title: str
    year: int | None
    language: str | None
    author_ids: tuple[int, ...]  # users with a claimed authorship relationship
    doi: str | None  # bare and in lower case: "10.1016/j.jcp.2019.17"
    doi_as_written: str | None  # as the manual record writes it: "doi:10.1016/...", ...
    scopus_id: str | None  # id-at-source of its Scopus record: "2-s2.0-" and 11 digits
    authors: tuple[Author, ...] = ()  # its record's author list: staff and external
    journal: tuple[str, str] | None = None  # (title, ISSN) of a journal article's journal


@dataclass(frozen=True)
class _Deletion:
    category: str
    id: int
    when: datetime


@dataclass
class _Canned:
    """A response served instead of the real one."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    """An API failure, answered with the document's ATOM error feed."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = ERROR_STATUS[code] if status is None else status
        self.retry_after = retry_after


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


class ElementsSimulator:
    """In-memory Elements API with seeded objects, deletions, write-back and a virtual clock."""

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
        items_per_category: int = 0,
        date_skew: float = 0.0,
        schema_version: str = "5.5",
        api_namespace: str = API_NS,
        can_modify: bool = True,
        patch_redirect: bool = True,
        fault_rate: float = 0.0,
        wall_clock: bool = False,
    ) -> None:
        """`wall_clock`: the clock never falls behind real time (a served simulator); else
        it moves only when told to (`advance`) or by a millisecond per change (the tests)."""
        if objects < 0 or items_per_category < 0:
            raise ValueError("object counts must not be negative")
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if api_namespace not in (API_NS, API_NS_HTTPS):
            raise ValueError("api_namespace must be one of the two the schema names")
        if not 0 <= fault_rate < 1:
            raise ValueError("fault_rate is a probability below 1")
        self._now = _ms((start or datetime.now(UTC)).astimezone(UTC))
        self._rng = random.Random(seed)  # noqa: S311  # reproducible demo data, not crypto
        # Own streams, so that adding items or faults leaves the seeded users and
        # publications exactly as they were.
        streams = ("items", "faults", "identifiers", "relations", "staff")
        (
            self._item_rng,
            self._fault_rng,
            self._identifier_rng,
            self._relation_rng,
            self._staff_rng,
        ) = (random.Random(f"{stream}-{seed}") for stream in streams)  # noqa: S311
        self._latency = latency_ms / 1000
        self._username = username
        self._password = password
        self._api_path = "/" + api_path.strip("/")
        self._date_skew = timedelta(seconds=date_skew)
        self._schema_version = schema_version
        self._affected = _version(schema_version) >= (5, 5)
        self._namespace = api_namespace
        self._can_modify = can_modify
        self._patch_redirect = patch_redirect
        self._fault_rate = fault_rate
        self._wall_clock = wall_clock
        self._users: dict[int, _User] = {}
        # Kept alongside _users so that seeding 100k objects stays linear.
        self._user_ids: list[int] = []
        self._usernames: set[str] = set()
        self._proprietary_ids: set[str] = set()
        self._publications: dict[int, _Publication] = {}
        self._items: dict[str, dict[int, _Item]] = {category: {} for category in _ITEM_TYPES}
        self._deletions: list[_Deletion] = []
        self._links: dict[int, _Link] = {}
        # (category, object id) -> ids of the links involving it, in id order.
        self._links_of: dict[tuple[str, int], list[int]] = {}
        self._next_link_id = self._relation_rng.randint(1000, 5000)
        # The last list query's selection: (query, ids, objects); None once anything changed.
        self._selection: (
            tuple[tuple[str, datetime | None, datetime | None], list[int], list[_Any]] | None
        ) = None
        self._next_id = {"user": self._rng.randint(1, 40), "publication": self._rng.randint(1, 400)}
        # Each injected failure with the path part it waits for (None: any request).
        self._faults: list[tuple[_ApiError, str | None]] = []
        self._canned: list[_Canned] = []
        self._truncations = 0
        self._stalls: list[float] = []
        self._drops = 0
        self._warnings: list[tuple[str | None, str]] = []
        self._next_links: str | None = None  # None, "loop", or an origin to name instead
        self.requests: list[tuple[str, str]] = []
        self.patches: list[tuple[str, int, bytes]] = []  # (category, object id, body) applied
        self._seed(objects)
        self._seed_items(items_per_category)

    # ----------------------------------------------------------------- test control

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._now += timedelta(seconds=seconds)

    def touch(
        self, category: str, object_id: int, title: str | None = None, at: datetime | None = None
    ) -> None:
        """Change an object now, or stamped `at` an earlier instant (a late commit)."""
        obj = self._get(category, object_id)
        if isinstance(obj, _Recorded):
            obj.title = title if title is not None else f"{obj.title} (revised)"
        else:
            if title is not None:
                raise ValueError("users have no title to set")
            obj.revision += 1
        self._changed(obj, at)

    def add(self, category: str) -> int:
        obj: _Any
        if category == "user":
            obj = self._new_user(self._now)
            self._add_user(obj)
        elif category == "publication":
            if not self._users:
                raise ValueError("a publication needs at least one user to author it")
            obj = self._new_publication(self._now)
            self._publications[obj.id] = obj
        elif category in self._items:
            obj = self._new_item(category, self._now)
            self._items[category][obj.id] = obj
        else:
            raise ValueError(f"unknown category {category!r}")
        obj.created = _ms(self._now)
        self._changed(obj)
        return obj.id

    def delete(self, category: str, object_id: int) -> None:
        """Delete an object; its neighbours count as affected (a relationship went away)."""
        obj = self._get(category, object_id)
        neighbours = self._related(obj)
        for link in self._links_involving(category, object_id):
            del self._links[link.id]
            for key in (("publication", link.publication_id), ("user", link.user_id)):
                self._links_of[key].remove(link.id)
        del self._store(category)[object_id]
        if category == "user":
            self._user_ids.remove(object_id)  # new publications are authored by users that exist
        self._selection = None
        instant = _ms(self._now)
        self._deletions.append(_Deletion(category, object_id, instant))
        for neighbour in neighbours:
            neighbour.affected = instant
        self._now = instant + timedelta(milliseconds=1)

    def add_user(
        self,
        first_name: str,
        last_name: str,
        *,
        current_staff: bool = True,
        academic: bool = True,
        faculty: str | None = None,
        proprietary_id: str | None = None,
    ) -> int:
        """A user of this name, for a test world: namesakes are welcome.

        `faculty`: the organisation-defined Faculty field's value (else one drawn, or none).
        """
        user = self._new_user(self._now)
        self._usernames.discard(user.username)
        user.first_name, user.last_name = first_name, last_name
        user.username, user.email_local = self._login(first_name, last_name)
        user.proprietary_id = proprietary_id
        self._add_user(user)
        user.current_staff = current_staff
        user.academic = academic
        if faculty is not None:
            user.faculty = faculty
        user.created = _ms(self._now)
        self._changed(user)
        return user.id

    def add_publication(self, title: str, authors: list[Author]) -> int:
        """A journal article with exactly this author list and no relationship yet."""
        now = _ms(self._now)
        type_id, type_name = _PUBLICATION_TYPES[0]
        publication = _Publication(
            category="publication",
            id=self._allocate_id("publication"),
            created=now,
            modified=now,
            affected=now,
            record_id=str(uuid.UUID(int=self._relation_rng.getrandbits(128), version=4)).upper(),
            type_id=type_id,
            type_name=type_name,
            title=title,
            author_ids=[],
            authors=list(authors),
            published=(now.year, now.month, None),
            language="en",
        )
        self._publications[publication.id] = publication
        self._changed(publication)
        return publication.id

    def relate(
        self,
        publication_id: int,
        user_id: int,
        *,
        visible: bool = True,
        type_name: str = AUTHORSHIP,
    ) -> int:
        """Create a (claimed) relationship; both objects are affected. Its id."""
        self._get("publication", publication_id), self._get("user", user_id)
        return self._new_link(publication_id, user_id, type_name, visible=visible).id

    def suggest(self, publication_id: int, user_id: int, type_name: str = AUTHORSHIP) -> int:
        """Suggest a relationship nobody claimed yet; both objects are affected. Its id."""
        self._get("publication", publication_id), self._get("user", user_id)
        return self._new_link(publication_id, user_id, type_name, suggested=True).id

    def unrelate(self, link_id: int) -> None:
        """Delete a relationship or a suggestion; both objects are affected."""
        link = self._links.pop(link_id)
        for key in (("publication", link.publication_id), ("user", link.user_id)):
            self._links_of[key].remove(link_id)
        self._affect(link)

    def set_visible(self, link_id: int, visible: bool) -> None:
        """A user shows or hides a relationship on their profile; both objects are affected."""
        link = self._links[link_id]
        link.visible = visible
        self._affect(link)

    def links_of(self, publication_id: int) -> list[tuple[int, int, bool, bool]]:
        """(link id, user id, visible, suggested) of each link of a publication."""
        return [
            (link.id, link.user_id, link.visible, link.suggested)
            for link in self._links_involving("publication", publication_id)
        ]

    def object_ids(self, category: str) -> list[int]:
        return sorted(self._store(category))

    def users(self) -> list[UserSnapshot]:
        return [
            UserSnapshot(
                id=user.id,
                proprietary_id=user.proprietary_id,
                first_name=user.first_name,
                last_name=user.last_name,
                initials=user.initials,
                email=user.email,
                faculty=user.faculty,
                current_staff=user.current_staff,
                academic=user.academic,
            )
            for user in self._users.values()
        ]

    def publications(self) -> list[PublicationSnapshot]:
        return [
            PublicationSnapshot(
                id=publication.id,
                type_name=publication.type_name,
                title=publication.title,
                year=publication.published[0] if publication.published else None,
                language=publication.language,
                author_ids=tuple(
                    link.user_id
                    for link in self._links_involving("publication", publication.id)
                    if not link.suggested and link.type_id == _TYPE_IDS[AUTHORSHIP]
                ),
                doi=None if publication.doi is None else _bare_doi(publication.doi),
                doi_as_written=publication.doi,
                scopus_id=publication.scopus_id,
                authors=tuple(publication.authors),
                journal=journal_of(publication),
            )
            for publication in self._publications.values()
        ]

    def title_of(self, object_id: int, category: str = "publication") -> str:
        return self._recorded(category, object_id).title

    def record_of(self, category: str, object_id: int) -> str:
        """The proprietary id of the object's manual record, as PATCH names it."""
        return self._recorded(category, object_id).record_id

    def notes_of(self, category: str, object_id: int) -> str | None:
        obj = self._get(category, object_id)
        return obj.notes if isinstance(obj, _Recorded) else None

    def type_of(self, category: str, object_id: int) -> str:
        obj = self._get(category, object_id)
        return obj.type_name if isinstance(obj, _Recorded) else "person"

    def fail_next(
        self,
        status: int,
        code: str,
        count: int = 1,
        retry_after: float | None = None,
        *,
        path: str | None = None,
    ) -> None:
        """Fail the next requests, or the next whose path contains `path`."""
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown Elements error code {code!r}")
        if not 400 <= status <= 599:
            raise ValueError("an injected failure needs an HTTP error status")
        self._faults.extend(
            (_ApiError(code, f"Simulated {code}.", status, retry_after), path) for _ in range(count)
        )

    def truncate_next(self, count: int = 1) -> None:
        self._truncations += count

    def serve_next(
        self, body: bytes, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next request with exactly this, whatever it asked."""
        self._canned.append(_Canned(status, body, dict(headers or {})))

    def stall_next(self, seconds: float, count: int = 1) -> None:
        """Hold the next requests this long before answering (a client's timeout fires)."""
        self._stalls.extend([seconds] * count)

    def drop_next(self, count: int = 1) -> None:
        """Close the connection of the next requests without an answer."""
        self._drops += count

    def warn_next(self, field_name: str | None, message: str, count: int = 1) -> None:
        """The next successful answers carry this api:warning in each entry."""
        self._warnings.extend([(field_name, message)] * count)

    def loop_next_links(self, on: bool = True) -> None:
        """Every page after the first links back to the first, as a corrupt index does."""
        self._next_links = "loop" if on else None

    def next_links_on(self, origin: str | None) -> None:
        """Next links name this origin (e.g. an internal host name) instead of the real one."""
        self._next_links = origin

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        base = self._api_path
        plural = "|".join(_PLURALS.values())
        category = "|".join(_PLURALS)
        # Before /{plural}/{id}: "equipment" is its own plural.
        app.router.add_get(f"{base}/{{category:{category}}}/sources", self._sources)
        app.router.add_get(f"{base}/{{category:{category}}}/types", self._types)
        app.router.add_route(
            "PATCH", f"{base}/{{category:{category}}}/records/{{source}}/{{pid}}", self._patch
        )
        app.router.add_get(f"{base}/deleted/{{plural:{plural}}}", self._deleted)
        app.router.add_get(f"{base}/relationships", self._relationships)
        app.router.add_get(f"{base}/{{plural:{plural}}}/{{id}}/relationships", self._relationships)
        app.router.add_get(
            f"{base}/{{plural:{plural}}}/{{id}}/suggestions/relationships/pending",
            self._relationships,
        )
        app.router.add_get(f"{base}/{{plural:{plural}}}", self._list)
        app.router.add_get(f"{base}/{{plural:{plural}}}/{{id}}", self._one)
        app.router.add_route("*", f"{base}/{{tail:.*}}", self._unknown)
        control = f"{CONTROL_PATH}elements/{{category:{category}}}"
        app.router.add_post(f"{control}/add", control_route(self._control_add))
        app.router.add_post(f"{control}/{{id:\\d+}}/touch", control_route(self._control_touch))
        app.router.add_post(f"{control}/{{id:\\d+}}/delete", control_route(self._control_delete))
        return app

    # ----------------------------------------------------------------- control over HTTP

    async def _control_add(self, request: web.Request) -> dict[str, object]:
        category = request.match_info["category"]
        object_id = self.add(category)
        return self._control_state(category, object_id)

    async def _control_touch(self, request: web.Request) -> dict[str, object]:
        category, object_id = request.match_info["category"], int(request.match_info["id"])
        title = (await control_body(request)).get("title")
        if title is not None and not isinstance(title, str):
            raise ValueError("title must be a string")
        self.touch(category, object_id, title)
        return self._control_state(category, object_id)

    async def _control_delete(self, request: web.Request) -> dict[str, object]:
        category, object_id = request.match_info["category"], int(request.match_info["id"])
        self.delete(category, object_id)
        return {"category": category, "id": object_id, "deleted": True}

    def _control_state(self, category: str, object_id: int) -> dict[str, object]:
        obj = self._get(category, object_id)
        state: dict[str, object] = {
            "category": category,
            "id": object_id,
            "modified": obj.modified.isoformat(),
        }
        if isinstance(obj, _Recorded):
            state["title"] = obj.title
        return state

    # ----------------------------------------------------------------- data

    def _store(
        self, category: str
    ) -> dict[int, _User] | dict[int, _Publication] | dict[int, _Item]:
        if category == "user":
            return self._users
        if category == "publication":
            return self._publications
        if category in self._items:
            return self._items[category]
        raise ValueError(f"unknown category {category!r}")

    def _get(self, category: str, object_id: int) -> _Any:
        store = self._store(category)
        if object_id not in store:
            raise KeyError(f"no {category} {object_id}")
        return store[object_id]

    def _recorded(self, category: str, object_id: int) -> _Recorded:
        obj = self._get(category, object_id)
        if not isinstance(obj, _Recorded):
            raise TypeError(f"a {category} holds no record here")
        return obj

    def _related(self, obj: _Object) -> list[_Any]:
        """The objects related to this one by a relationship or a suggestion."""
        related: list[_Any] = []
        for link in self._links_involving(obj.category, obj.id):
            if obj.category == "publication" and link.user_id in self._users:
                related.append(self._users[link.user_id])
            elif obj.category == "user" and link.publication_id in self._publications:
                related.append(self._publications[link.publication_id])
        return related

    def _links_involving(self, category: str, object_id: int) -> list[_Link]:
        return [self._links[i] for i in self._links_of.get((category, object_id), [])]

    def _new_link(
        self,
        publication_id: int,
        user_id: int,
        type_name: str,
        *,
        visible: bool = True,
        suggested: bool = False,
        at: datetime | None = None,
    ) -> _Link:
        """A link between two existing objects; without `at`, both are affected now."""
        if type_name not in _TYPE_IDS:
            raise ValueError(f"unknown relationship type {type_name!r}")
        instant = at or _ms(self._now)
        link = _Link(
            id=self._next_link_id,
            type_id=_TYPE_IDS[type_name],
            publication_id=publication_id,
            user_id=user_id,
            created=instant,
            modified=instant,
            visible=visible,
            suggested=suggested,
        )
        self._next_link_id += self._relation_rng.randint(1, 4)
        self._links[link.id] = link
        for key in (("publication", publication_id), ("user", user_id)):
            self._links_of.setdefault(key, []).append(link.id)
        if at is None:
            self._affect(link)
        return link

    def _affect(self, link: _Link) -> None:
        """A relationship was created, changed or deleted: both its objects are affected."""
        instant = _ms(self._now)
        link.modified = instant
        self._selection = None
        for category, object_id in (("publication", link.publication_id), ("user", link.user_id)):
            store = self._store(category)
            if object_id in store:
                store[object_id].affected = instant
        self._now = instant + timedelta(milliseconds=1)

    def _changed(self, obj: _Object, at: datetime | None = None) -> None:
        """Record a change; neighbours by relationship count as affected (per the doc).

        A change stamped `at` an earlier instant is one whose transaction committed late:
        the clock does not move, the stamp lies in the past.
        """
        if at is not None:
            if at.tzinfo is None or at > self._now:
                raise ValueError("a late commit is stamped, timezone-aware, before now")
            instant = _ms(at.astimezone(UTC))
        else:
            instant = _ms(self._now)
            self._now = instant + timedelta(milliseconds=1)
        self._selection = None
        obj.modified = instant
        obj.affected = instant
        for neighbour in self._related(obj):
            neighbour.affected = max(neighbour.affected, instant)

    def _matching(
        self, category: str, affected_since: datetime | None, modified_since: datetime | None
    ) -> tuple[list[int], list[_Any]]:
        """The ids and objects a list query selects, in id order.

        A sweep asks the same query page after page: the selection is kept until an object
        changes, so that a page of a 100k-object store does not cost a pass over all of it.
        """
        query: _ListQuery = (category, affected_since, modified_since)
        if self._selection is None or self._selection[0] != query:
            # Ids only grow and objects are stored as they are made: the store is in id order.
            matches: list[_Any] = [
                obj
                for obj in self._store(category).values()
                if (affected_since is None or obj.affected >= affected_since)
                and (modified_since is None or obj.modified >= modified_since)
            ]
            self._selection = (query, [obj.id for obj in matches], matches)
        return self._selection[1], self._selection[2]

    def _allocate_id(self, category: str) -> int:
        object_id = self._next_id[category]
        # Gaps, as deleted objects leave them.
        self._next_id[category] = object_id + self._rng.randint(1, 3)
        return object_id

    def _add_user(self, user: _User) -> None:
        if user.proprietary_id is not None:
            # An HR employee id is one person's: a drawn one that is taken moves to the next
            # free one (drawing again would change every user drawn after it).
            number = int(user.proprietary_id)
            while f"{number:07d}" in self._proprietary_ids:
                number += 1
            user.proprietary_id = f"{number:07d}"
            self._proprietary_ids.add(user.proprietary_id)
        user.current_staff = self._relation_rng.random() >= _FORMER_STAFF_SHARE
        user.academic = self._staff_rng.random() >= _NON_ACADEMIC_SHARE
        self._users[user.id] = user
        self._user_ids.append(user.id)
        self._usernames.add(user.username)

    def _login(self, first: str, last: str) -> tuple[str, str]:
        """A username no user has yet, and the e-mail local part that goes with it."""
        stem = (_ascii(first)[:1] + _ascii(last))[:10]
        username, n = stem, 1
        while username in self._usernames:
            n += 1
            username = f"{stem}{n}"
        return username, f"{_ascii(first)[:1]}.{_ascii(last)}{username[len(stem) :]}"

    def _new_user(self, modified: datetime) -> _User:
        rng = self._rng
        first = rng.choice(_FIRST_NAMES)
        last = rng.choice(_LAST_NAMES)
        username, email_local = self._login(first, last)
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
            email_local=email_local,
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
        publication = _Publication(
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
            authors=[Author(self._users[i].last_name, self._users[i].initials) for i in author_ids],
            published=published,
            language=language,
        )
        # From their own streams, so that the seeded data is what it was before DOIs and
        # relationships.
        self._identify(publication)
        self._relate_authors(publication)
        return publication

    def _relate_authors(self, publication: _Publication) -> None:
        """Link the staff authors as Elements would, and write the list as records do.

        Most staff authors claimed their authorship; some hid it, some have a suggestion
        only. A record may shorten a user's initials ("M" for "Mary Ann"), and may name
        external co-authors, some with an ORCID, who may share a staff member's name.
        """
        rng = self._relation_rng
        for index, user_id in enumerate(publication.author_ids):
            roll = rng.random()
            self._new_link(
                publication.id,
                user_id,
                AUTHORSHIP,
                visible=not _SUGGESTED_SHARE <= roll < _SUGGESTED_SHARE + _HIDDEN_SHARE,
                suggested=roll < _SUGGESTED_SHARE,
                at=publication.modified,
            )
            entry = publication.authors[index]
            if len(entry.initials) > 1 and rng.random() < _SHORT_INITIALS_SHARE:
                publication.authors[index] = Author(entry.last_name, entry.initials[0])
        if rng.random() < _EXTERNALS_SHARE:
            for _ in range(rng.randint(1, 3)):
                orcid = _orcid(rng) if rng.random() < _ORCID_SHARE else None
                initials = rng.choice(_FIRST_NAMES)[0]
                external = Author(rng.choice(_LAST_NAMES), initials, orcid)
                publication.authors.insert(rng.randint(0, len(publication.authors)), external)

    def _identify(self, publication: _Publication) -> None:
        """Most publications get a DOI, written as records write them; some a Scopus record."""
        rng = self._identifier_rng
        if rng.random() < _DOI_SHARE:
            year = publication.published[0] if publication.published else rng.randint(1998, 2024)
            doi = f"{rng.choice(_DOI_PREFIXES)}/{rng.choice(_DOI_CODES)}.{year}.{publication.id}"
            publication.doi = rng.choices(
                (doi, doi.upper(), f"https://doi.org/{doi}", f"doi:{doi}"), (7, 1, 1, 1)
            )[0]
        if rng.random() < _SCOPUS_SHARE:
            # Unique by the object id; 11 digits for any id below ten million.
            scopus = 84_000_000_000 + publication.id * 1000 + rng.randrange(1000)
            publication.scopus_id = f"2-s2.0-{scopus}"

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
        self._make_namesakes()
        for _ in range(objects - n_users):
            publication = self._new_publication(rng.choice(pool))
            self._publications[publication.id] = publication
        # Authorship relates users and publications, so each is affected by the other's
        # latest modification.
        for publication in self._publications.values():
            for author in self._related(publication):
                author.affected = max(author.affected, publication.modified)
                publication.affected = max(publication.affected, author.modified)

    def _make_namesakes(self) -> None:
        """Give one user another's name, as every directory of staff has namesakes.

        Both hold a proprietary-id where at least two users do, so that both are HR persons.
        """
        with_ids = [i for i in self._user_ids if self._users[i].proprietary_id is not None]
        candidates = with_ids if len(with_ids) >= 2 else self._user_ids
        if len(candidates) < 2:
            return
        original, namesake = (
            self._users[i] for i in sorted(self._identifier_rng.sample(candidates, 2))
        )
        self._usernames.discard(namesake.username)
        namesake.first_name, namesake.last_name = original.first_name, original.last_name
        namesake.username, namesake.email_local = self._login(
            namesake.first_name, namesake.last_name
        )
        self._usernames.add(namesake.username)

    def _new_item(self, category: str, modified: datetime) -> _Item:
        rng = self._item_rng
        object_id = self._next_id.get(category) or rng.randint(1, 90)
        self._next_id[category] = object_id + rng.randint(1, 3)
        type_id, type_name = rng.choice(_ITEM_TYPES[category])
        nouns = rng.sample(_NOUNS, 2)
        return _Item(
            category=category,
            id=object_id,
            created=_ms(modified - timedelta(days=rng.randint(0, 900))),
            modified=modified,
            affected=modified,
            record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper(),
            type_id=type_id,
            type_name=type_name,
            title=rng.choice(_TITLE_TEMPLATES).format(
                adj=rng.choice(_ADJECTIVES),
                noun=nouns[0],
                noun2=nouns[1],
                ctx=rng.choice(_CONTEXTS),
            ),
            started=(rng.randint(2005, 2025), rng.randint(1, 12)) if rng.random() < 0.8 else None,
        )

    def _seed_items(self, per_category: int) -> None:
        rng = self._item_rng
        for category, items in self._items.items():
            for _ in range(per_category):
                modified = _ms(self._now - timedelta(seconds=rng.randint(60, 86400 * 9)))
                item = self._new_item(category, modified)
                items[item.id] = item

    # ----------------------------------------------------------------- HTTP

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._wall_clock:
            self._now = max(self._now, _ms(datetime.now(UTC)))
        if request.path.startswith(CONTROL_PATH):
            return await handler(request)  # not the API's: no credentials, faults, latency
        self.requests.append((request.method, request.path_qs))
        if self._latency:
            await asyncio.sleep(self._latency)
        if self._drops:
            self._drops -= 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if self._stalls:
            await asyncio.sleep(self._stalls.pop(0))
        try:
            self._authenticate(request)
            fault = self._next_fault(request.path)
            if fault is not None:
                raise fault
            if self._canned:
                canned = self._canned.pop(0)
                response: web.StreamResponse = _xml_response(canned.body, canned.status)
                response.headers.update(canned.headers)
            else:
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
        response.headers[hdrs.DATE] = format_datetime(self._now + self._date_skew, usegmt=True)
        return response

    def _next_fault(self, path: str) -> _ApiError | None:
        for index, (fault, waits_for) in enumerate(self._faults):
            if waits_for is None or waits_for in path:
                del self._faults[index]
                return fault
        if self._fault_rate and self._fault_rng.random() < self._fault_rate:
            code = self._fault_rng.choice(
                ("concurrency conflict", "database timeout", "server fault")
            )
            return _ApiError(code, f"Simulated {code}.")
        return None

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

    def _next_href(
        self, base: str, path: str, query: dict[str, str], last_id: int | None
    ) -> str | None:
        """The next page's link (after-id pagination), bent as the injected faults say."""
        kept = {k: v for k, v in query.items() if k != "after-id"}
        if self._next_links == "loop" and "after-id" in query:
            return f"{base}{path}{_qs(kept)}"  # back to the first page
        if last_id is None:
            return None
        if self._next_links not in (None, "loop"):
            base = f"{self._next_links}{self._api_path}"
        return f"{base}{path}{_qs({'after-id': str(last_id), **kept})}"

    def _pagination(
        self,
        feed: etree._Element,
        *,
        this_href: str,
        next_href: str | None,
        total: int,
        per_page: int,
    ) -> None:
        pagination = _sub(
            feed, _api("pagination"), results_count=str(total), items_per_page=str(per_page)
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

    async def _list(self, request: web.Request) -> web.StreamResponse:
        category = _CATEGORIES[request.match_info["plural"]]
        filters = {"modified-since", "detail", "per-page", "after-id"}
        if self._affected:
            filters.add("affected-since")
        query = self._query(request, frozenset(filters))
        detail = query.get("detail", "ref")
        per_page = _per_page(query, detail)
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
        ids, matches = self._matching(category, affected_since, modified_since)
        feed, page = self._feed_page(
            request,
            f"/{_PLURALS[category]}",
            query,
            matches=matches,
            remaining=matches[bisect.bisect_right(ids, after_id) :],
            per_page=per_page,
            subtitle=lambda listed, this_href: (
                f"This feed lists {listed} of a total of {len(matches)} results "
                f"from the following search query: {this_href}"
            ),
        )
        warning = self._warnings.pop(0) if self._warnings else None
        for obj in page:
            self._entry(feed, obj, self._base(request), full=detail == "full", warning=warning)
        return _xml_response(self._serialise(feed))

    def _feed_page(
        self,
        request: web.Request,
        path: str,
        query: dict[str, str],
        *,
        matches: Sequence[_Paged],
        remaining: Sequence[_Paged],
        per_page: int,
        subtitle: Callable[[int, str], str],
    ) -> tuple[etree._Element, Sequence[_Paged]]:
        """A feed of one page of `remaining` (the `matches` after the asked-for id), with
        its pagination; `subtitle` words it from the page's length and the feed's link."""
        page = remaining[:per_page]
        base = self._base(request)
        this_href = f"{base}{path}" + _qs(query)
        next_href = self._next_href(
            base, path, query, page[-1].id if len(remaining) > per_page else None
        )
        feed = self._feed(
            request,
            feed_id=f"{self._api_path}{path}{_qs(query)}",
            updated=_render_now(self._now),
            term="item-list",
            subtitle=subtitle(len(page), this_href),
        )
        self._pagination(
            feed, this_href=this_href, next_href=next_href, total=len(matches), per_page=per_page
        )
        return feed, page

    async def _relationships(self, request: web.Request) -> web.StreamResponse:
        """The relationships (or pending suggestions) of one object, or all relationships."""
        suggested = request.path.endswith("/pending")
        allowed = {"detail", "per-page", "after-id", "types"}
        if "plural" not in request.match_info:
            allowed.add("involving")
        query = self._query(request, frozenset(allowed))
        involved = self._involved(request, query)
        type_ids = _type_ids(query)
        detail = query.get("detail", "ref")
        per_page = _per_page(query, detail)
        after_id = _uint(query, "after-id", 0)
        links = (
            self._links_involving(*involved)
            if involved is not None
            else sorted(self._links.values(), key=lambda link: link.id)
        )
        matches = [
            link
            for link in links
            if link.suggested == suggested and (type_ids is None or link.type_id in type_ids)
        ]
        feed, page = self._feed_page(
            request,
            request.path.removeprefix(self._api_path),
            query,
            matches=matches,
            remaining=[link for link in matches if link.id > after_id],
            per_page=per_page,
            subtitle=lambda listed, _: f"This feed lists {listed} of {len(matches)} relationships.",
        )
        for link in page:
            self._link_entry(feed, link, self._base(request), involved, full=detail == "full")
        return _xml_response(self._serialise(feed))

    def _involved(self, request: web.Request, query: dict[str, str]) -> tuple[str, int] | None:
        """The object whose relationships are asked for: from the path, or `involving`."""
        if "plural" in request.match_info:
            category, raw_id = _CATEGORIES[request.match_info["plural"]], request.match_info["id"]
        elif "involving" in query:
            named = _INVOLVING_RE.fullmatch(query["involving"])
            if named is None or named[1] not in _PLURALS:
                raise _ApiError("argument fault", "involving value not in the correct format.")
            category, raw_id = named[1], named[2]
        else:
            return None
        if not _UINT_RE.fullmatch(raw_id):
            # The document allows username-, pid- and source- forms too; the simulator
            # answers as a server would that knows no such object.
            raise _ApiError("resource not found", f"No {category} is identified by {raw_id}.")
        if int(raw_id) not in self._store(category):
            if any(d.category == category and d.id == int(raw_id) for d in self._deletions):
                raise _ApiError("resource deleted", f"The {category} {raw_id} was deleted.")
            raise _ApiError("resource not found", f"The {category} {raw_id} was not found.")
        return category, int(raw_id)

    async def _deleted(self, request: web.Request) -> web.StreamResponse:
        category = _CATEGORIES[request.match_info["plural"]]
        query = self._query(request, frozenset({"deleted-since", "per-page", "after-id"}))
        per_page = _uint(query, "per-page", _DEFAULT_PER_PAGE)
        if not 1 <= per_page <= _MAX_PER_PAGE:
            raise _ApiError(
                "argument fault", f"per-page value must be between 1 and {_MAX_PER_PAGE}."
            )
        after_id = _uint(query, "after-id", 0)
        since = (
            _parse_iso("deleted-since", query["deleted-since"])
            if "deleted-since" in query
            else None
        )
        matches = sorted(
            (
                d
                for d in self._deletions
                if d.category == category and (since is None or d.when >= since)
            ),
            key=lambda d: d.id,
        )
        path = f"/deleted/{_PLURALS[category]}"
        feed, page = self._feed_page(
            request,
            path,
            query,
            matches=matches,
            remaining=[d for d in matches if d.id > after_id],
            per_page=per_page,
            subtitle=lambda listed, _: (
                f"This feed lists {listed} of {len(matches)} deleted objects."
            ),
        )
        for deletion in page:
            entry = _sub(feed, _atom("entry"))
            _sub(entry, _atom("id"), f"tag:publications@organisation,2009:{path}/{deletion.id}")
            _sub(entry, _atom("title"), f"Deleted {category} {deletion.id}")
            _sub(
                entry,
                _api("deleted-object"),
                category=category,
                id=str(deletion.id),
                deleted_when=_render_ts(deletion.when, deletion.id),
            )
        return _xml_response(self._serialise(feed))

    async def _one(self, request: web.Request) -> web.StreamResponse:
        category = _CATEGORIES[request.match_info["plural"]]
        raw_id = request.match_info["id"]
        query = self._query(request, frozenset({"detail"}))
        if not _UINT_RE.fullmatch(raw_id):
            raise _ApiError("argument fault", "Object identifier not in a supported format.")
        obj = self._store(category).get(int(raw_id))
        if obj is None:
            if any(d.category == category and d.id == int(raw_id) for d in self._deletions):
                raise _ApiError("resource deleted", f"The {category} {raw_id} was deleted.")
            raise _ApiError("resource not found", f"The {category} {raw_id} was not found.")
        return self._object_response(request, obj, full=query.get("detail", "full") == "full")

    def _object_response(self, request: web.Request, obj: _Any, *, full: bool) -> web.Response:
        base = self._base(request)
        feed = self._feed(
            request,
            feed_id=f"{self._api_path}/{_PLURALS[obj.category]}/{obj.id}",
            updated=_render_ts(obj.modified, obj.id),
            term="item",
            subtitle=f"This feed represents the {obj.category} {obj.id}.",
        )
        _sub(feed, _atom("title"), "Symplectic Elements object")
        author = _sub(feed, _atom("author"))
        _sub(author, _atom("name"), "Symplectic Elements at Organisation")
        warning = self._warnings.pop(0) if self._warnings else None
        self._entry(feed, obj, base, full=full, warning=warning)
        body = self._serialise(feed)
        # The ETag names the object's version: a new one with each modification, not when
        # a neighbour merely affects it (Last-Modified says the same).
        version = f"{obj.category}/{obj.id}/{obj.modified.isoformat()}/{full}"
        etag = f'"{hashlib.sha256(version.encode()).hexdigest()[:32]}"'
        validators = {
            hdrs.ETAG: etag,
            hdrs.LAST_MODIFIED: format_datetime(obj.modified.replace(microsecond=0), usegmt=True),
        }
        if request.method == "GET" and _not_modified(request, etag, obj.modified):
            return web.Response(status=304, headers=validators)
        response = _xml_response(body)
        response.headers.update(validators)
        return response

    async def _sources(self, request: web.Request) -> web.StreamResponse:
        category = request.match_info["category"]
        self._query(request, frozenset())
        feed = self._feed(
            request,
            feed_id=f"{self._api_path}/{category}/sources",
            updated=_render_now(self._now),
            term="item-list",
            subtitle=f"The data sources of {_PLURALS[category]}.",
        )
        for name, source_id, importable, display in _SOURCES:
            result = _sub(_sub(feed, _atom("entry")), _api("result"))
            source = _sub(
                result, _api("data-source"), category=category, id=str(source_id), name=name
            )
            _sub(source, _api("importable"), "true" if importable else "false")
            _sub(source, _api("display-name"), display)
        return _xml_response(self._serialise(feed))

    async def _types(self, request: web.Request) -> web.StreamResponse:
        category = request.match_info["category"]
        self._query(request, frozenset())
        feed = self._feed(
            request,
            feed_id=f"{self._api_path}/{category}/types",
            updated=_render_now(self._now),
            term="item-list",
            subtitle=f"The types of {_PLURALS[category]}.",
        )
        for type_id, type_name in _types_of(category):
            object_type = _sub(
                _sub(feed, _atom("entry")), _api("type"), id=str(type_id), name=type_name
            )
            _sub(object_type, _api("heading-singular"), type_name.replace("-", " ").capitalize())
            fields = _sub(object_type, _api("fields"))
            for name, field_type, operations in _fields_of(category, type_name):
                item = _sub(fields, _api("field"))
                _sub(item, _api("name"), name)
                _sub(item, _api("display-name"), name.replace("-", " ").capitalize())
                _sub(item, _api("type"), field_type)
                _sub(item, _api("is-mandatory"), "true" if name == "title" else "false")
                allowed = _sub(item, _api("update-field-operations"))
                for operation in operations:
                    _sub(allowed, _api("operation"), type=operation)
        return _xml_response(self._serialise(feed))

    async def _patch(self, request: web.Request) -> web.StreamResponse:
        """PATCH update-record: validated against /sources and /types, as the server would."""
        category = request.match_info["category"]
        self._query(request, frozenset())
        if not self._can_modify:
            raise _ApiError(
                "unauthorised access", "The API account may not modify data in Elements."
            )
        if request.content_type != "text/xml":
            raise _ApiError("argument fault", "The request content must be text/xml.")
        source = next((s for s in _SOURCES if s[0] == request.match_info["source"]), None)
        if source is None:
            raise _ApiError("resource not found", "No such data source.")
        if not source[2]:
            raise _ApiError("argument fault", f"The {source[0]} source does not accept imports.")
        obj = next(
            (
                o
                for o in self._store(category).values()
                if isinstance(o, _Recorded)
                and source[0] == _RECORD_SOURCE
                and o.record_id == request.match_info["pid"]
            ),
            None,
        )
        if obj is None:
            raise _ApiError("resource not found", "No record with that proprietary id.")
        body = await request.read()
        changes = _update_record(
            body,
            {
                name: (field_type, operations)
                for name, field_type, operations in _fields_of(category, obj.type_name)
            },
        )
        for name, value in changes:
            _set_text(obj, name, value)
        self._changed(obj)
        self.patches.append((category, obj.id, body))
        if self._patch_redirect:
            location = f"{self._base(request)}/{_PLURALS[category]}/{obj.id}"
            return web.Response(status=303, headers={hdrs.LOCATION: location})
        return self._object_response(request, obj, full=True)

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        raise _ApiError("resource not found", f"No resource at {request.path}.")

    # ----------------------------------------------------------------- XML

    def _serialise(self, feed: etree._Element) -> bytes:
        body = etree.tostring(feed, xml_declaration=True, encoding="utf-8", pretty_print=True)
        if self._namespace != API_NS:
            body = body.replace(API_NS.encode(), self._namespace.encode())
        return body

    def _feed(
        self, request: web.Request, *, feed_id: str, updated: str, term: str, subtitle: str
    ) -> etree._Element:
        """The feed-level ATOM fluff the document shows; clients must ignore all of it."""
        feed = etree.Element(_atom("feed"), nsmap=_FEED_NSMAP)
        _sub(feed, _api("schema-version"), self._schema_version)
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
            version=self._schema_version,
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
        self,
        feed: etree._Element,
        obj: _Any,
        base: str,
        *,
        full: bool,
        warning: tuple[str | None, str] | None = None,
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
        if warning is not None:
            warnings = _sub(entry, _api("warnings"))
            field_name, message = warning
            if field_name is None:
                _sub(warnings, _api("warning"), message)
            else:
                _sub(warnings, _api("warning"), message, associated_field=field_name)

    def _link_entry(
        self,
        feed: etree._Element,
        link: _Link,
        base: str,
        involved: tuple[str, int] | None,
        *,
        full: bool,
    ) -> None:
        """One relationship or suggestion; a feed for one object leaves that object out."""
        entry = _sub(feed, _atom("entry"))
        tag = "relationship-suggestion" if link.suggested else "relationship"
        _sub(
            entry,
            _atom("id"),
            f"tag:publications@organisation,2009:{self._api_path}/{tag}s/{link.id}",
        )
        type_name = _RELATIONSHIP_TYPES[link.type_id]
        _sub(entry, _atom("title"), f"{type_name} {link.id}")
        element = _sub(
            entry,
            _api(tag),
            id=str(link.id),
            type_id=str(link.type_id),
            type=type_name,
            href=f"{base}/relationships/{link.id}",
            created_when=_render_ts(link.created, link.id),
            last_modified_when=_render_ts(link.modified, link.id + 1),
        )
        if not full:
            return
        ends = (("from", "publication", link.publication_id), ("to", "user", link.user_id))
        for direction, category, object_id in ends:
            if (category, object_id) == involved:
                continue
            related = _sub(element, _api("related"), direction=direction)
            href = f"{base}/{_PLURALS[category]}/{object_id}"
            related.append(self._object(self._get(category, object_id), href, full=False))
        if not link.suggested:
            _sub(element, _api("is-visible"), "true" if link.visible else "false")
            _sub(element, _api("is-favourite"), "false")

    def _object(self, obj: _Any, href: str, *, full: bool) -> etree._Element:
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
        if self._affected:
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
            _sub(element, _api("is-current-staff"), "true" if obj.current_staff else "false")
            _sub(element, _api("is-academic"), "true" if obj.academic else "false")
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
            label = obj.category.capitalize()
            element.append(etree.Comment(f'{label} type {obj.type_id} is "{obj.type_name}"'))
            _sub(element, _api("ever-approved"), "true")
            records = _sub(element, _api("records"))
            record = _sub(
                records,
                _api("record"),
                format="native",
                source_id="1",
                source_name=_RECORD_SOURCE,
                source_display_name="Manual",
                id_at_source=obj.record_id,
            )
            _native(_sub(record, _api("native")), obj)
            if isinstance(obj, _Publication) and obj.scopus_id is not None:
                source_name, source_id, _, display_name = _SCOPUS_SOURCE
                scopus = _sub(
                    records,
                    _api("record"),
                    format="native",
                    source_id=str(source_id),
                    source_name=source_name,
                    source_display_name=display_name,
                    id_at_source=obj.scopus_id,
                )
                _scopus_native(_sub(scopus, _api("native")), obj)
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
        response = _xml_response(self._serialise(feed), status=error.status)
        if error.retry_after is not None:
            response.headers[hdrs.RETRY_AFTER] = str(round(error.retry_after))
        if error.status == 401:
            response.headers[hdrs.WWW_AUTHENTICATE] = 'Basic realm="Elements API"'
        return response


def _text_field(
    native: etree._Element, name: str, value: str, display_name: str | None = None
) -> None:
    item = _sub(
        native,
        _api("field"),
        name=name,
        type="text",
        display_name=display_name or name.capitalize(),
    )
    _sub(item, _api("text"), value)


def _set_text(obj: _Recorded, name: str, value: str | None) -> None:
    """Set (or, with None, clear) a text field of the object's manual record."""
    if name == "title":
        if value is None:
            raise _ApiError("argument fault", "The title field is mandatory.")
        obj.title = value
    elif name == "notes":
        obj.notes = value
    elif name == "language" and isinstance(obj, _Publication):
        obj.language = value
    elif name == "doi" and isinstance(obj, _Publication):
        obj.doi = value
    else:
        raise _ApiError("argument fault", f"The simulator cannot update {name}.")


def journal_of(publication: _Publication) -> tuple[str, str] | None:
    """A journal article's journal, the same for the same publication in every world."""
    if publication.type_name != "journal-article":
        return None
    return JOURNALS[publication.id % len(JOURNALS)]


def _scopus_native(native: etree._Element, publication: _Publication) -> None:
    """What a Scopus record holds here, disagreeing with the manual one as real records do:
    the title with Scopus's full stop, the DOI bare, the ISSN without its hyphen, and a
    volume the manual record lacks."""
    _text_field(native, "title", publication.title.rstrip(".") + ".")
    if publication.doi is not None:
        _text_field(native, "doi", _bare_doi(publication.doi), "DOI")
    journal = journal_of(publication)
    if journal is not None:
        _text_field(native, "journal", journal[0])
        _text_field(native, "issn", journal[1].replace("-", ""), "ISSN")
        _text_field(native, "volume", str(publication.id % 40 + 1))


def _date_field(
    native: etree._Element, name: str, display_name: str, parts: tuple[int | None, ...]
) -> None:
    """A date field from (year, month, day), where month and day may be left out."""
    year, month, day = (*parts, None, None)[:3]
    item = _sub(native, _api("field"), name=name, type="date", display_name=display_name)
    when = _sub(item, _api("date"))
    # Partial dates leave out the day, or the day and the month.
    if day is not None:
        _sub(when, _api("day"), str(day))
    if month is not None:
        _sub(when, _api("month"), str(month))
    _sub(when, _api("year"), str(year))


def _native(native: etree._Element, obj: _Publication | _Item) -> None:
    _text_field(native, "title", obj.title)
    if obj.notes is not None:
        _text_field(native, "notes", obj.notes)
    if isinstance(obj, _Item):
        if obj.started is not None:
            _date_field(native, "start-date", "Start date", obj.started)
        return
    authors = _sub(
        native, _api("field"), name="authors", type="person-list", display_name="Authors"
    )
    people = _sub(authors, _api("people"))
    for author in obj.authors:
        person = _sub(people, _api("person"))
        _sub(person, _api("last-name"), author.last_name)
        _sub(person, _api("initials"), author.initials)
        if author.orcid is not None:
            identifiers = _sub(person, _api("identifiers"))
            _sub(identifiers, _api("identifier"), author.orcid, scheme="orcid")
    if obj.published is not None:
        _date_field(native, "publication-date", "Publication date", obj.published)
    if obj.language is not None:
        _text_field(native, "language", obj.language)
    if obj.doi is not None:
        _text_field(native, "doi", obj.doi, "DOI")
    journal = journal_of(obj)
    if journal is not None:
        _text_field(native, "journal", journal[0])
        _text_field(native, "issn", journal[1], "ISSN")


def _orcid(rng: random.Random) -> str:
    """An ORCID iD with its ISO 7064 11,2 check character."""
    digits = [rng.randint(0, 9) for _ in range(15)]
    total = 0
    for digit in digits:
        total = (total + digit) * 2
    check = (12 - total % 11) % 11
    text = "".join(map(str, digits)) + ("X" if check == 10 else str(check))
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def _bare_doi(written: str) -> str:
    """A DOI without the "https://doi.org/" or "doi:" in front, in lower case."""
    lowered = written.strip().lower()
    for prefix in ("https://doi.org/", "http://dx.doi.org/", "doi:"):
        lowered = lowered.removeprefix(prefix)
    return lowered


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _types_of(category: str) -> tuple[tuple[int, str], ...]:
    if category == "publication":
        return tuple(_PUBLICATION_TYPES)
    if category == "user":
        return ((1, "person"),)
    return _ITEM_TYPES[category]


def _fields_of(category: str, type_name: str) -> list[tuple[str, str, tuple[str, ...]]]:
    fields = _FIELDS.get(category, _ITEM_FIELDS)
    lacks = _TYPE_LACKS.get((category, type_name), frozenset())
    return [f for f in fields if f[0] not in lacks]


def _update_record(
    body: bytes, fields: dict[str, tuple[str, tuple[str, ...]]]
) -> list[tuple[str, str | None]]:
    """The (field, new text or None to clear) changes an update-record document asks for."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise _ApiError("argument fault", "The request content is not well-formed XML.") from exc
    if root.tag != _api("update-record"):
        raise _ApiError("argument fault", "Expected an update-record element in the API namespace.")
    changes: list[tuple[str, str | None]] = []
    for item in root.iterfind(f"{_api('fields')}/{_api('field')}"):
        name, operation = item.get("name", ""), item.get("operation", "")
        if operation not in _UPDATE_OPERATIONS:
            raise _ApiError("argument fault", f"Unknown operation {operation!r} for {name}.")
        if name not in fields:
            raise _ApiError("argument fault", f"The record's type has no field {name!r}.")
        field_type, allowed = fields[name]
        if operation not in allowed:
            raise _ApiError("argument fault", f"The {name} field does not allow {operation}.")
        if field_type != "text":
            raise _ApiError(
                "argument fault", f"The simulator only updates text fields, not {name}."
            )
        if operation == "clear":
            changes.append((name, None))
            continue
        text = item.find(_api("text"))
        if text is None or not (text.text or "").strip():
            raise _ApiError("argument fault", f"The {name} field needs a text value to set.")
        changes.append((name, text.text))
    if not changes:
        raise _ApiError("argument fault", "The update-record document changes no field.")
    return changes


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


def _per_page(query: dict[str, str], detail: str) -> int:
    per_page = _uint(query, "per-page", _DEFAULT_PER_PAGE)
    limit = _MAX_PER_PAGE_FULL if detail == "full" else _MAX_PER_PAGE
    if not 1 <= per_page <= limit:
        raise _ApiError("argument fault", f"per-page value must be between 1 and {limit}.")
    return per_page


def _type_ids(query: dict[str, str]) -> frozenset[int] | None:
    """The `types` filter: relationship type numbers, comma-separated."""
    if "types" not in query:
        return None
    parts = query["types"].split(",")
    if not all(_UINT_RE.fullmatch(part) for part in parts):
        raise _ApiError("argument fault", "types value not in the correct format.")
    return frozenset(int(part) for part in parts)


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
