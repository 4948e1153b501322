"""A Pure API simulator, as strict as the Pure OpenAPI contract and documents allow.

It serves, under ``/ws/api``, the content operations crisync uses (create,
get, update, delete, list, search, lock and unlock) for every content type
the contract lets a client create and lock. One set of handlers serves them
all: the routes, request schemas, system names and read-only properties come
from the contract.

What it enforces, and where that comes from:

* ``api-key`` header, else 401 (the contract's security scheme).
* Request bodies valid against the contract (``crisync.handlers.pure.openapi``), else
  400 ValidationProblemDetails.
* A new object carries no ``uuid`` and no ``version``; an update carries the
  ``version`` last read, or none for a "dirty write" (the ``version``
  description in the contract), else 409 ConflictProblemDetails.
* References to organizations, persons and other simulated content name
  objects that exist, else 400 (Pure resolves every reference on save).
* Custom-defined fields follow the Pure guide: only configured fields, with
  their configured type; only entries present in a write change anything.
* Merged content answers GET with 301 to the surviving UUID, which lists the
  old one in ``previousUuids``.
* Lock and unlock answer 409 when the content already is so (the contract).
* A storm (``storm``) fails a share of all requests at random, reproducibly from a
  seed, the way a struggling deployment does: server errors, gateway timeouts after
  Pure committed the write, requests that hang past a client's timeout, and 409s only
  where the contract documents them and they are true.
* Throttling (``throttle``): requests per second, requests in flight and an hourly
  quota, each optional. The Pure documents beside the contract name these limits but not
  how Pure answers past them, and the contract documents no 429; so the simulator answers
  as HTTP defines it (RFC 6585 429 Too Many Requests, RFC 9110 Retry-After in whole
  seconds, rounded up to when the request would have been let through) with a problem
  document like Pure's other errors. It is strict: the windows slide (no burst at a
  second's turn), and a request is counted when it arrives; a refused one is not counted.
* Search is full-text, as a search engine reads it (the contract only says "String used
  to perform search"): any word of the search string may match, objects matching more
  words come first, and results are paged; an identifier's value is words like others.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import copy
import hmac
import json
import math
import random
import re
import time
import uuid as uuid_module
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

from crisync.handlers.pure.merge_patch import apply_merge_patch
from crisync.handlers.pure.openapi import PureContract, Violation, json_path
from crisync.sim.journals import JOURNALS

PROBLEM_JSON = "application/problem+json"
MAX_PAGE_SIZE = 1000  # the contract's maximum for the list operations' `size`
DEFAULT_PAGE_SIZE = 10  # the contract's default for `size`
API_USER = "api"  # modifiedBy of writes through the API
EDITOR = "editor"  # modifiedBy of edits and merges made "in Pure"
JOURNAL_LIST = "journal-list"  # createdBy of the journals Pure holds from the start

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_LOCK_PATH = re.compile(r"/([a-z-]+)/\{uuid\}/actions/lock")
_SCHEMA_REF_PREFIX = "#/components/schemas/"

# Operations that change content: a failure may come after their write was committed.
_WRITES = frozenset({"create", "update", "delete", "lock", "unlock"})
# Operations whose 409 states a fact ("already locked"): a storm's 409 makes it true first.
_STATE_ACTIONS = frozenset({"lock", "unlock"})

# (method, path suffix after /{type}, operation name in request_counts)
# What the access definition's read right allows; the others need write.
READ_OPERATIONS = frozenset({"list", "search", "get"})
_OPERATIONS = (
    ("PUT", "", "create"),
    ("GET", "", "list"),
    ("POST", "/search", "search"),
    ("GET", "/{uuid}", "get"),
    ("PUT", "/{uuid}", "update"),
    ("DELETE", "/{uuid}", "delete"),
    ("POST", "/{uuid}/actions/lock", "lock"),
    ("POST", "/{uuid}/actions/unlock", "unlock"),
)


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ContentType:
    """A Pure content type as the contract describes it."""

    segment: str  # URL segment, e.g. "research-outputs"
    system_name: str  # systemName in references to it, e.g. "ResearchOutput"
    server_managed: frozenset[str]  # readOnly properties: Pure sets them, clients' are ignored
    has_custom_fields: bool


def content_types(contract: PureContract) -> dict[str, ContentType]:
    """The content types the contract lets a client create and lock, by URL segment."""
    paths = contract.document["paths"]
    content_ref = contract.document["components"]["schemas"]["ContentRef"]
    # ContentRef's discriminator maps each systemName to the type's reference schema.
    system_names = {
        ref[len(_SCHEMA_REF_PREFIX) :]: name
        for name, ref in content_ref["discriminator"]["mapping"].items()
    }
    found: dict[str, ContentType] = {}
    for path in paths:
        match = _LOCK_PATH.fullmatch(path)
        create = None if match is None else contract.request_schema_for("PUT", f"/{match[1]}")
        if match is None or create is None:
            continue
        schema = create["$ref"][len(_SCHEMA_REF_PREFIX) :]
        found[match[1]] = ContentType(
            segment=match[1],
            system_name=system_names[f"{schema}Ref"],
            server_managed=contract.read_only_properties(schema),
            has_custom_fields="customDefinedFields" in contract.property_names(schema),
        )
    return found


class PureSimulator:
    """An in-memory Pure behind the Pure API; see the module docstring for its rules."""

    def __init__(
        self,
        *,
        api_key: str = "pure-secret",
        seed: int = 1,
        latency_ms: int = 0,
        organizations: int = 3,
        base_path: str = "/ws/api",
        custom_defined_fields: Mapping[str, Mapping[str, str]] | None = None,
        access: Mapping[str, Iterable[str]] | None = None,
        hidden_fields: Iterable[str] = (),
    ) -> None:
        """`custom_defined_fields` configures, per URL segment, field name → field type
        (``Boolean``, ``String``, ...); Pure knows no others. `access` is the API key's
        access definition: per URL segment, the rights it has (``read``, ``write``); None
        allows everything, a type it does not name nothing (403). `hidden_fields` are
        properties the key is never shown (its access definition leaves them out)."""
        self._contract = PureContract.load()
        self._types = content_types(self._contract)
        self._by_system_name = {t.system_name: t for t in self._types.values()}
        self._api_key = api_key.encode()
        self._access = None if access is None else {t: set(r) for t, r in access.items()}
        self._hidden = frozenset(hidden_fields)
        self._latency = latency_ms / 1000
        self._base_path = base_path.rstrip("/")
        self._rng = random.Random(seed)  # noqa: S311 - reproducible ids, not secrets
        self._next_pure_id = 1000
        self._objects: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in self._types}
        self._locked: set[tuple[str, str]] = set()
        self._moved: dict[tuple[str, str], str] = {}  # (type, merged uuid) -> surviving uuid
        # What search finds: per type, the objects holding each word. Reading every object's
        # words at each search made a search's cost grow with the content (75 ms at 80k
        # research outputs, a benchmark's bottleneck); objects changed since the last search
        # (every change touches them) are indexed again before the next one.
        self._postings: dict[str, dict[str, set[str]]] = {t: {} for t in self._types}
        self._indexed: dict[str, tuple[str, set[str]]] = {}  # uuid -> (type, its words)
        self._unindexed: set[str] = set()
        self._failures: list[_Failure] = []
        self._storm: _Storm | None = None
        self._throttle: _Throttle | None = None
        # Requests answered 429, by the limit they met: "rate", "concurrency", "quota"
        self.throttled: collections.Counter[str] = collections.Counter()
        # Failures the storm injected, by kind: "503", "503 after write", "hang", ...
        self.storm_failures: collections.Counter[str] = collections.Counter()
        self._documented = self._documented_statuses()
        self._custom_fields = self._check_custom_fields(custom_defined_fields or {})
        self.request_counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.received = 0  # every request that reached it, answered or refused
        self.organization_uuids = [
            self._seed_organization(number) for number in range(1, organizations + 1)
        ]
        # Pure's journal list: every Pure holds one before anyone enters an article.
        self.journal_uuids = {issn: self._seed_journal(title, issn) for title, issn in JOURNALS}

    # -- inspection and scripted changes, for tests -----------------------------

    def objects(self, content_type: str) -> dict[str, dict[str, Any]]:
        """A copy of the stored objects of a type (URL segment), by uuid."""
        return copy.deepcopy(self._objects[content_type])

    def is_locked(self, content_type: str, uuid: str) -> bool:
        return (content_type, uuid) in self._locked

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        content_type: str | None = None,
        operation: str | None = None,
        retry_after: int | None = None,
        after_write: bool = False,
    ) -> None:
        """Answer the next `count` requests (of one type and operation, if given) with
        `status`; the operations are create, list, search, get, update, delete, lock, unlock.

        A client error (409, 404, ...) only hits operations whose contract
        documents it, so a 409 meant for an update passes the GET before it;
        server errors, 429 and authentication failures hit any operation.
        `retry_after` adds that header; `after_write` carries the request out
        before failing, like a gateway timing out after Pure committed.
        """
        HTTPStatus(status)  # refuses a status that does not exist
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        if content_type is not None and content_type not in self._types:
            raise ValueError(f"unknown content type {content_type!r}")
        if operation is not None and operation not in {op for _, _, op in _OPERATIONS}:
            raise ValueError(f"unknown operation {operation!r}")
        self._failures.append(
            _Failure(status, count, content_type, retry_after, after_write, operation)
        )

    def cancel_failures(self) -> None:
        """Forget the failures `fail_next` scheduled that did not happen yet."""
        self._failures.clear()

    def storm(
        self,
        rate: float,
        *,
        statuses: tuple[int, ...] = (409, 500, 503, 504),
        hang_s: float | None = None,
        after_write_share: float = 0.5,
        seed: int = 1,
    ) -> None:
        """From now on, fail each request with probability `rate` (0 ends the storm).

        A failing request gets one of `statuses`, or, when `hang_s` is given, hangs:
        it is answered 504 only after `hang_s` seconds, which should exceed the
        client's timeout. A 409 only hits operations whose contract documents it, as
        `fail_next` does; where it cannot apply, one of the other kinds is drawn, so
        every operation fails at `rate`. On writing operations a failure comes after
        the write was committed with probability `after_write_share` (a gateway
        timing out while Pure stored the object); a 409 on lock or unlock always does,
        since the contract's 409 says the content already is so. `fail_next`'s
        scripted failures come first. The draws come from `seed`, so one sequence of
        requests meets the same failures every time; `storm_failures` counts them.

        Writes that land only after the client gave up are not simulated: no client
        can tell one from a write that never happens until it lands.
        """
        for name, share in (("rate", rate), ("after_write_share", after_write_share)):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be within [0, 1], not {share}")
        for status in statuses:
            if HTTPStatus(status) < 400:
                raise ValueError(f"{status} is not an error status")
        if hang_s is not None and hang_s <= 0:
            raise ValueError(f"hang_s must be positive, not {hang_s}")
        draws = random.Random(seed)  # noqa: S311 - reproducible faults, not secrets
        self._storm = _Storm(rate, statuses, hang_s, after_write_share, draws)

    def throttle(
        self,
        *,
        per_second: int | None = None,
        concurrent: int | None = None,
        hourly_quota: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """From now on, answer 429 with Retry-After past any of these limits (None: no such
        limit); `clock` (seconds, monotonic) is what the windows go by."""
        for name, limit in (
            ("per_second", per_second),
            ("concurrent", concurrent),
            ("hourly_quota", hourly_quota),
        ):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1, not {limit}")
        self._throttle = _Throttle(per_second, concurrent, hourly_quota, clock)

    def merge(self, content_type: str, from_uuid: str, into_uuid: str) -> None:
        """Merge one object into another, as an editor can in Pure.

        Content that referred to the merged object refers to the survivor
        afterwards, with a new version, as Pure rewrites it.
        """
        objects = self._objects[content_type]
        if from_uuid == into_uuid or from_uuid not in objects or into_uuid not in objects:
            raise KeyError(f"cannot merge {from_uuid} into {into_uuid} in {content_type}")
        merged = objects.pop(from_uuid)
        self._unindexed.add(from_uuid)
        survivor = objects[into_uuid]
        survivor["previousUuids"] = [
            *survivor.get("previousUuids", []),
            from_uuid,
            *merged.get("previousUuids", []),
        ]
        self._touch(survivor, by=EDITOR)
        self._locked.discard((content_type, from_uuid))
        for key, target in self._moved.items():
            if key[0] == content_type and target == from_uuid:
                self._moved[key] = into_uuid
        self._moved[(content_type, from_uuid)] = into_uuid
        system_name = self._types[content_type].system_name
        for stored in (item for by_uuid in self._objects.values() for item in by_uuid.values()):
            referring = [
                reference
                for _, reference in _references(stored, ())
                if reference["systemName"] == system_name and reference["uuid"] == from_uuid
            ]
            for reference in referring:
                reference["uuid"] = into_uuid
            if referring:
                self._touch(stored, by=EDITOR)

    def seed(
        self, content_type: str, body: Mapping[str, Any], *, by: str, locked: bool = False
    ) -> dict[str, Any]:
        """Store content another system put into Pure (HR's synchronisation, a Scopus import,
        an editor): valid as a create must be, `createdBy` naming `by`. Returns a copy."""
        kind = self._types[content_type]
        violations = self._violations(kind, "PUT", "", body, None)
        if violations:
            raise ValueError(f"seeded {content_type} breaks the contract: {violations}")
        stored = self._insert(kind, copy.deepcopy(dict(body)), by=by)
        if locked:
            self._locked.add((content_type, stored["uuid"]))
        return copy.deepcopy(stored)

    def edit(self, content_type: str, uuid: str, changes: dict[str, Any]) -> None:
        """Change an object as an editor in Pure would: merged in, new version.

        Edits obey the contract too, so that what crisync reads stays valid.
        """
        kind = self._types[content_type]
        current = self._objects[content_type][uuid]
        edited = copy.deepcopy(current)
        self._apply(kind, edited, copy.deepcopy(changes))
        violations = self._violations(kind, "PUT", "/{uuid}", edited, current)
        if violations:
            raise ValueError("; ".join(map(str, violations)))
        self._touch(edited, by=EDITOR)
        self._objects[content_type][uuid] = edited

    # -- the HTTP application -------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
            return await self._guard(request, handler)

        app = web.Application(middlewares=[guard])
        paths = self._contract.document["paths"]
        handlers: dict[str, Callable[[web.Request, ContentType], Awaitable[web.Response]]] = {
            "create": self._create,
            "list": self._list,
            "search": self._search,
            "get": self._get,
            "update": self._update,
            "delete": self._delete,
            "lock": self._lock,
            "unlock": self._unlock,
        }
        for method, suffix, operation in _OPERATIONS:
            # Each route serves the types whose contract has that operation.
            segments = [s for s in self._types if method.lower() in paths.get(f"/{s}{suffix}", {})]
            pattern = "|".join(map(re.escape, segments))
            app.router.add_route(
                method,
                f"{self._base_path}/{{content_type:{pattern}}}{suffix}",
                self._endpoint(operation, handlers[operation]),
            )
        return app

    async def _guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        self.received += 1
        throttle = self._throttle
        if throttle is None:
            return await self._answer(request, handler)
        refused = throttle.admit()
        if refused is not None:
            limit, retry_after, detail = refused
            self.throttled[limit] += 1
            return _problem(429, detail, headers={"Retry-After": str(retry_after)})
        try:
            return await self._answer(request, handler)
        finally:
            throttle.in_flight -= 1

    async def _answer(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """The answer leaves `latency` after the request came, half of it on the way in.

        The simulator's own work is done within that time, not added to it: a Pure that
        answers in L ms, as a benchmark's bound takes it, whatever this process costs on a
        machine it shares with the client. A client stopped in the second half has had its
        request carried out without an answer, as with a real server."""
        loop = asyncio.get_running_loop()
        answer_at = loop.time() + self._latency
        if self._latency:
            await asyncio.sleep(self._latency / 2)
        response = await self._handled(request, handler)
        if self._latency:
            await asyncio.sleep(max(0.0, answer_at - loop.time()))
        return response

    async def _handled(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        # The key is compared in constant time and never repeated back.
        if not hmac.compare_digest(request.headers.get("api-key", "").encode(), self._api_key):
            return _problem(401, "A valid api-key header is required.")
        try:
            return await handler(request)
        except web.HTTPError as error:  # aiohttp's own answers: no such route, wrong method
            allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            return _problem(error.status, error.reason, headers=allow)

    def _without_hidden(self, document: dict[str, Any]) -> dict[str, Any]:
        """An answer as the key is shown it: an object, or a page of them."""
        if isinstance(document.get("items"), list):
            return {**document, "items": [self._without_hidden(i) for i in document["items"]]}
        return {name: value for name, value in document.items() if name not in self._hidden}

    def _endpoint(
        self,
        operation: str,
        handler: Callable[[web.Request, ContentType], Awaitable[web.Response]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            kind = self._types[request.match_info["content_type"]]
            self.request_counts[(kind.segment, operation)] += 1
            right = "read" if operation in READ_OPERATIONS else "write"
            if self._access is not None and right not in self._access.get(kind.segment, ()):
                return _problem(
                    403,
                    f"The API key's access definition does not allow {right} on {kind.segment}.",
                )
            failure = self._take_failure(kind.segment, operation) or self._storm_failure(
                kind.segment, operation
            )
            if failure is not None and not failure.after_write:
                return await failure.answer()
            try:
                response = await handler(request, kind)
            except _ProblemError as problem:
                response = problem.response()
            if self._hidden and right == "read" and response.status == 200:
                response = web.json_response(
                    self._without_hidden(json.loads(response.text or "{}"))
                )
            return response if failure is None else await failure.answer()

        return endpoint

    async def _create(self, request: web.Request, kind: ContentType) -> web.Response:
        body = await _json_body(request)
        self._require_valid(kind, "PUT", "", body, None)
        stored = self._insert(kind, body, by=API_USER)
        return web.json_response(stored, status=201)

    async def _get(self, request: web.Request, kind: ContentType) -> web.Response:
        uuid = _path_uuid(request)
        survivor = self._moved.get((kind.segment, uuid))
        if survivor is not None:
            location = request.url.with_path(f"{self._base_path}/{kind.segment}/{survivor}")
            return web.Response(status=301, headers={"Location": str(location)})
        return web.json_response(self._live(kind, uuid))

    async def _update(self, request: web.Request, kind: ContentType) -> web.Response:
        uuid = _path_uuid(request)
        body = await _json_body(request)
        current = self._live(kind, uuid)
        if not isinstance(body, dict):
            self._require_valid(kind, "PUT", "/{uuid}", body, current)
        # What a patch cannot do, whatever it leaves: move the uuid, change the class.
        immutable = _update_violations(body, current)
        if immutable:
            raise _invalid(immutable)
        version = body.get("version")
        if version is not None and version != current["version"]:
            raise _conflict(
                current, f"The {kind.system_name} was modified since version {version}."
            )
        # The body is a patch: what must hold is the content it leaves.
        updated = copy.deepcopy(current)
        self._apply(kind, updated, body)
        self._require_valid(kind, "PUT", "/{uuid}", updated, current)
        self._touch(updated, by=API_USER)
        self._objects[kind.segment][uuid] = updated
        return web.json_response(updated)

    async def _delete(self, request: web.Request, kind: ContentType) -> web.Response:
        uuid = _path_uuid(request)
        self._live(kind, uuid)
        del self._objects[kind.segment][uuid]
        self._unindexed.add(uuid)
        self._locked.discard((kind.segment, uuid))
        return web.Response(status=204)

    async def _lock(self, request: web.Request, kind: ContentType) -> web.Response:
        return self._set_lock(kind, _path_uuid(request), locked=True)

    async def _unlock(self, request: web.Request, kind: ContentType) -> web.Response:
        return self._set_lock(kind, _path_uuid(request), locked=False)

    def _set_lock(self, kind: ContentType, uuid: str, *, locked: bool) -> web.Response:
        current = self._live(kind, uuid)
        key = (kind.segment, uuid)
        if (key in self._locked) == locked:
            state = "locked" if locked else "unlocked"
            raise _conflict(current, f"The {kind.system_name} is already {state}.")
        if locked:
            self._locked.add(key)
        else:
            self._locked.discard(key)
        return web.Response(status=204)

    async def _list(self, request: web.Request, kind: ContentType) -> web.Response:
        offset = _query_int(request, "offset", 0)
        size = _query_int(request, "size", DEFAULT_PAGE_SIZE)
        return web.json_response(_page(list(self._objects[kind.segment].values()), offset, size))

    async def _search(self, request: web.Request, kind: ContentType) -> web.Response:
        query = await _json_body(request)
        violations = self._contract.request_violations("POST", f"/{kind.segment}/search", query)
        if violations:
            raise _invalid(violations)
        candidates = self._objects[kind.segment]
        if "uuids" in query:
            found = [candidates[u] for u in dict.fromkeys(query["uuids"]) if u in candidates]
        else:
            found = list(candidates.values())
        terms = _words(str(query.get("searchString", "")))
        if terms:
            # A search engine's reading: any word may match, most matching words first, in
            # the order the objects were stored (their pureId) among equals.
            matching = self._matching_words(kind, terms)
            found = sorted(
                (item for item in found if item["uuid"] in matching)
                if "uuids" in query
                else (candidates[uuid] for uuid in matching),
                key=lambda item: (-matching[item["uuid"]], item["pureId"]),
            )
        # The query schema sets no maximum; the list operations' one applies.
        size = _bounded("size", query.get("size", DEFAULT_PAGE_SIZE))
        return web.json_response(_page(found, _bounded("offset", query.get("offset", 0)), size))

    # -- the store -----------------------------------------------------------

    def _matching_words(self, kind: ContentType, terms: set[str]) -> collections.Counter[str]:
        """How many of the terms each object of the type holds, by uuid; only those with any."""
        self._index_changed()
        postings = self._postings[kind.segment]
        matching: collections.Counter[str] = collections.Counter()
        for term in terms:
            matching.update(postings.get(term, ()))
        return matching

    def _index_changed(self) -> None:
        for uuid in self._unindexed:
            old = self._indexed.pop(uuid, None)
            if old is not None:
                postings = self._postings[old[0]]
                for word in old[1]:
                    postings[word].discard(uuid)
            for segment, objects in self._objects.items():
                item = objects.get(uuid)
                if item is not None:
                    words = _words(_text_of(item))
                    postings = self._postings[segment]
                    for word in words:
                        postings.setdefault(word, set()).add(uuid)
                    self._indexed[uuid] = (segment, words)
                    break
        self._unindexed.clear()

    def _live(self, kind: ContentType, uuid: str) -> dict[str, Any]:
        current = self._objects[kind.segment].get(uuid)
        if current is None:
            raise _ProblemError(404, f"No {kind.system_name} with uuid {uuid}.")
        return current

    def _insert(self, kind: ContentType, body: Mapping[str, Any], *, by: str) -> dict[str, Any]:
        uuid = str(uuid_module.UUID(int=self._rng.getrandbits(128), version=4))
        self._next_pure_id += 1
        stored: dict[str, Any] = {"pureId": self._next_pure_id, "uuid": uuid}
        fields = self._custom_fields.get(kind.segment)
        if fields:
            # The custom-defined fields guide: the map always lists every field.
            stored["customDefinedFields"] = {
                name: {"typeDiscriminator": field_type} for name, field_type in fields.items()
            }
        self._apply(kind, stored, body)
        self._touch(stored, by=by)
        stored.update(createdBy=by, createdDate=stored["modifiedDate"], systemName=kind.system_name)
        self._objects[kind.segment][uuid] = stored
        return stored

    @staticmethod
    def _apply(kind: ContentType, target: dict[str, Any], body: Mapping[str, Any]) -> None:
        """Merge the writable properties of a body in (the guide: every PUT is a JSON merge
        patch); the others stay as they were."""
        writable = {
            key: value
            for key, value in body.items()
            if key not in kind.server_managed and key != "version"
        }
        apply_merge_patch(target, writable)

    def _touch(self, stored: dict[str, Any], *, by: str) -> None:
        self._unindexed.add(stored["uuid"])
        stored["version"] = f"{self._rng.getrandbits(64):016x}"
        stored["modifiedBy"] = by
        stored["modifiedDate"] = _now()

    def _seed_organization(self, number: int) -> str:
        body = {
            "name": {"en_GB": f"Simulated Organization {number}"},
            "type": {
                "uri": "/dk/atira/pure/organisation/organisationtypes/organisation/department"
            },
            "lifecycle": {"startDate": "2000-01-01"},
        }
        return str(self.seed("organizations", body, by=EDITOR)["uuid"])

    def _seed_journal(self, title: str, issn: str) -> str:
        body = {
            "titles": [{"title": title}],
            "issns": [{"issn": issn}],
            "type": {"uri": "/dk/atira/pure/journal/journaltypes/journal/journal"},
            "workflow": {"step": "approved"},
        }
        return str(self.seed("journals", body, by=JOURNAL_LIST)["uuid"])

    def _check_custom_fields(
        self, fields: Mapping[str, Mapping[str, str]]
    ) -> dict[str, dict[str, str]]:
        field_types = self._contract.document["components"]["schemas"]["CustomDefinedField"]
        known_types = field_types["discriminator"]["mapping"].keys()
        for segment, by_name in fields.items():
            kind = self._types.get(segment)
            if kind is None or not kind.has_custom_fields:
                raise ValueError(f"{segment!r} has no custom-defined fields in the contract")
            unknown = set(by_name.values()) - known_types
            if unknown:
                raise ValueError(f"unknown custom-defined field types {sorted(unknown)}")
        return {segment: dict(by_name) for segment, by_name in fields.items()}

    # -- validation ------------------------------------------------------------

    def _require_valid(
        self,
        kind: ContentType,
        method: str,
        suffix: str,
        body: Any,
        current: Mapping[str, Any] | None,
    ) -> None:
        violations = self._violations(kind, method, suffix, body, current)
        if violations:
            raise _invalid(violations)

    def _violations(
        self,
        kind: ContentType,
        method: str,
        suffix: str,
        body: Any,
        current: Mapping[str, Any] | None,
    ) -> list[Violation]:
        """What is wrong with a write: the contract first, then what Pure checks on save."""
        violations = self._contract.request_violations(method, f"/{kind.segment}{suffix}", body)
        if violations:
            return violations  # the body's shape is unknown; the checks below rely on it
        if current is None:
            violations += _creation_violations(body)
        else:
            violations += _update_violations(body, current)
        violations += self._reference_violations(body)
        violations += self._custom_field_violations(kind, body)
        return violations

    def _reference_violations(self, body: Mapping[str, Any]) -> list[Violation]:
        violations = []
        for path, reference in _references(body, ()):
            kind = self._by_system_name.get(reference["systemName"])
            if kind is not None and reference["uuid"] not in self._objects[kind.segment]:
                violations.append(
                    Violation(
                        json_path(path),
                        "unknownReference",
                        f"no {kind.system_name} with uuid {reference['uuid']}",
                    )
                )
        return violations

    def _custom_field_violations(
        self, kind: ContentType, body: Mapping[str, Any]
    ) -> list[Violation]:
        configured = self._custom_fields.get(kind.segment, {})
        violations = []
        for name, entry in (body.get("customDefinedFields") or {}).items():
            path = json_path(("customDefinedFields", name))
            if name not in configured:
                violations.append(
                    Violation(
                        path, "unknownCustomDefinedField", f"no custom-defined field {name!r}"
                    )
                )
            elif entry and entry["typeDiscriminator"] != configured[name]:
                violations.append(
                    Violation(
                        path,
                        "customDefinedFieldType",
                        f"{name!r} is a {configured[name]} field, not {entry['typeDiscriminator']}",
                    )
                )
        return violations

    def _documented_statuses(self) -> dict[tuple[str, str], frozenset[int]]:
        paths = self._contract.document["paths"]
        documented = {}
        for method, suffix, operation in _OPERATIONS:
            for segment in self._types:
                responses = paths.get(f"/{segment}{suffix}", {}).get(method.lower(), {})
                codes = responses.get("responses", {})
                documented[(segment, operation)] = frozenset(int(code) for code in codes)
        return documented

    def _storm_failure(self, segment: str, operation: str) -> _Failure | None:
        storm = self._storm
        if storm is None or storm.rng.random() >= storm.rate:
            return None
        documented = self._documented.get((segment, operation), frozenset())
        kinds: list[int | None] = [s for s in storm.statuses if _may_hit(s, documented)]
        if storm.hang_s is not None:
            kinds.append(None)  # a hang
        if not kinds:
            return None
        status = storm.rng.choice(kinds)
        after_write = operation in _WRITES and (
            storm.rng.random() < storm.after_write_share
            or (status == 409 and operation in _STATE_ACTIONS)
        )
        label = "hang" if status is None else str(status)
        self.storm_failures[f"{label} after write" if after_write else label] += 1
        if status is None:  # a gateway that gave up on the hanging request answers 504
            return _Failure(504, 1, None, None, after_write, hang_s=storm.hang_s)
        return _Failure(status, 1, None, None, after_write)

    def _take_failure(self, segment: str, operation: str) -> _Failure | None:
        documented = self._documented.get((segment, operation), frozenset())
        for failure in self._failures:
            if (
                failure.content_type in (None, segment)
                and failure.operation in (None, operation)
                and _may_hit(failure.status, documented)
            ):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None


def _may_hit(status: int, documented: frozenset[int]) -> bool:
    """Whether an operation may fail with `status`: server errors, throttling and refused
    credentials hit any operation, other client errors only where the contract has them."""
    return status >= 500 or status in (401, 403, 429) or status in documented


@dataclass
class _Storm:
    rate: float
    statuses: tuple[int, ...]
    hang_s: float | None
    after_write_share: float
    rng: random.Random


@dataclass
class _Failure:
    status: int
    remaining: int
    content_type: str | None
    retry_after: int | None
    after_write: bool
    operation: str | None = None  # only requests of this operation fail (None: any)
    hang_s: float | None = None  # answer only this late: past the client's timeout

    async def answer(self) -> web.Response:
        if self.hang_s is not None:
            await asyncio.sleep(self.hang_s)
        headers = None if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return _problem(self.status, "Injected failure.", headers=headers)


@dataclass
class _Throttle:
    """Pure's site-wide limits, as `PureSimulator.throttle` sets them."""

    per_second: int | None
    concurrent: int | None
    hourly_quota: int | None
    clock: Callable[[], float]
    in_flight: int = 0
    arrivals: collections.deque[float] = field(default_factory=collections.deque)

    def admit(self) -> tuple[str, int, str] | None:
        """None: the request is let through (and counted); else the limit it met, the
        Retry-After (seconds) and the problem's detail."""
        now = self.clock()
        while self.arrivals and self.arrivals[0] <= now - QUOTA_PERIOD:
            self.arrivals.popleft()
        if self.hourly_quota is not None and len(self.arrivals) >= self.hourly_quota:
            wait = self.arrivals[-self.hourly_quota] + QUOTA_PERIOD - now
            return "quota", math.ceil(wait), f"Hourly quota of {self.hourly_quota} requests spent."
        if self.per_second is not None:
            last_second = len(self.arrivals) - bisect.bisect_right(self.arrivals, now - 1.0)
            if last_second >= self.per_second:
                wait = self.arrivals[-self.per_second] + 1.0 - now
                return "rate", math.ceil(wait), f"More than {self.per_second} requests per second."
        if self.concurrent is not None and self.in_flight >= self.concurrent:
            return "concurrency", 1, f"More than {self.concurrent} requests at once."
        self.arrivals.append(now)
        self.in_flight += 1
        return None


# Seconds of the hourly quota's sliding window.
QUOTA_PERIOD = 3600


class _ProblemError(Exception):
    """Ends a request with an RFC 7807 answer."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra

    def response(self) -> web.Response:
        return _problem(self.status, self.detail, **self.extra)


def _problem(
    status: int,
    detail: str,
    *,
    problem_type: str = "/error",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = {
        "type": problem_type,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return web.json_response(body, status=status, content_type=PROBLEM_JSON, headers=headers)


def _invalid(violations: list[Violation]) -> _ProblemError:
    return _ProblemError(
        400,
        "; ".join(map(str, violations)),
        problem_type="/validation-error",
        errors=[
            {"path": v.path, "code": v.code, "title": {"en_GB": v.message}} for v in violations
        ],
    )


def _conflict(current: Mapping[str, Any], detail: str) -> _ProblemError:
    return _ProblemError(
        409,
        detail,
        problem_type="/conflict-error",
        modified=current["modifiedDate"],
        modifiedBy=current["modifiedBy"],
    )


def _creation_violations(body: Mapping[str, Any]) -> list[Violation]:
    violations = []
    if "uuid" in body:
        violations.append(Violation("$.uuid", "readOnly", "Pure assigns the uuid of new content"))
    if body.get("version") is not None:
        violations.append(Violation("$.version", "version", "new content has no version yet"))
    return violations


def _update_violations(body: Mapping[str, Any], current: Mapping[str, Any]) -> list[Violation]:
    violations = []
    if "uuid" in body and body["uuid"] != current["uuid"]:
        violations.append(Violation("$.uuid", "readOnly", "the uuid differs from the URL's"))
    old_type = current.get("typeDiscriminator")
    new_type = body.get("typeDiscriminator", old_type)
    if new_type != old_type:
        # The subtype is the Java class Pure stores the content as.
        violations.append(
            Violation(
                "$.typeDiscriminator", "immutable", f"cannot change {old_type} into {new_type}"
            )
        )
    return violations


def _references(
    value: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Content references (``{systemName, uuid}``) below the top-level object."""
    if isinstance(value, dict):
        if path and "systemName" in value and "uuid" in value:
            yield path, value
        for key, item in value.items():
            yield from _references(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _references(item, (*path, index))


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise _ProblemError(400, "The request body must be application/json.")
    try:
        return json.loads(await request.read())
    except ValueError as error:
        raise _ProblemError(400, f"The request body is not JSON: {error}") from None


def _path_uuid(request: web.Request) -> str:
    uuid = request.match_info["uuid"]
    if _UUID.fullmatch(uuid) is None:
        raise _ProblemError(400, f"{uuid!r} is not a UUID.")
    return uuid


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return _bounded(name, default)
    try:
        return _bounded(name, int(raw))
    except ValueError:
        raise _ProblemError(400, f"{name} must be an integer, not {raw!r}.") from None


def _bounded(name: str, value: int) -> int:
    """A paging parameter, checked: never negative, and `size` at most MAX_PAGE_SIZE."""
    if value < 0:
        raise _ProblemError(400, f"{name} must not be negative, not {value}.")
    if name == "size" and value > MAX_PAGE_SIZE:
        raise _ProblemError(400, f"size must be at most {MAX_PAGE_SIZE}, not {value}.")
    return value


def _page(items: list[dict[str, Any]], offset: int, size: int) -> dict[str, Any]:
    return {
        "count": len(items),
        "pageInformation": {"offset": offset, "size": size},
        "items": items[offset : offset + size],
    }


def _words(text: str) -> set[str]:
    """The words a search indexes: runs of letters and digits, without case."""
    return set(re.findall(r"\w+", text.casefold()))


def _text_of(value: Any) -> str:
    """All strings in a document, for the simulator's search."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(_text_of(item) for item in value.values())
    if isinstance(value, list):
        return " ".join(_text_of(item) for item in value)
    return ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
