"""A simulator of the Unicat API: API-key auth with JWTs, the sync stream, records, bulk jobs.

It serves what a sync client uses, shaped as the Unicat API reference shows it:

- ``POST /api/p/{project}/auth`` ``{"api_key"}``: the JWT comes back in the ``Authorization``
  response header, with the initial project data (definitions, fields, cursors, version);
- ``POST /sync/get`` ``{"cc_cursor", "project", "cursor"}``: the changes after both cursors,
  ``result.sync`` a list of ``{type, cursor, action, data_type, data_key}`` (jobs add
  ``data``), and ``result.warning`` while more is waiting; ``POST /sync/cursors``: the latest
  cursors;
- ``POST /api/p/{project}/records/get`` and ``/definitions/get`` (``record``/``records``,
  ``definition``/``definitions``);
- ``POST /api/p/{project}/schema/bulk/save_as_new`` ``{"selection"}``: answers a
  ``job.token`` and reports the job in the sync stream, queued → processing → done.

Every response is ``{"success", "result", "data"}``; errors are ``{"code", "message",
"info"}`` with the HTTP status equal to the code for HTTP errors and 422 for the
application errors 1000-1006 (the reference's "Error responses" page). Where the
documents leave room the simulator takes the awkward reading:

- JWTs are stateless, as the documents say: a token is valid until it expires, and any
  response to a request made with a token past half its life carries a renewed one in
  ``Authorization``. An expired or unknown token is 401 with ``WWW-Authenticate``, and
  only a new ``/auth`` cures it. The clock is virtual (``advance``), so expiry is under
  test control; ``revoke_tokens`` rotates the signing key.
- The global (``cc``) and project streams number their items independently, from
  different offsets, interleaved in one history; cursor 0 means "from the start".
- A cursor beyond the latest one is 1006 (what a client holding a cursor from before a
  server restore sees); wrong types or unknown parameters are 400.
- Jobs advance one step per ``/sync/get`` request (``hold_jobs`` freezes them), so a
  client that polls sees them move, and a job's events repeat on the global stream.
- The history holds what a long-lived project has: definitions, a root folder record,
  users, a version announcement, records inserted and then updated.
- Fault injection: ``fail_next`` answers an error envelope, or for 502-504 a proxy's HTML
  page; ``delay_next`` answers late, for client timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import math
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from crisync.sim.server import CONTROL_PATH, control_body, control_route

# The application errors of the reference's "Error responses" page; HTTP errors use their status.
ERRORS: dict[int, str] = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    422: "Unprocessable Entity",
    500: "Internal server error",
    501: "Not implemented",
    1000: "Unexpected error",
    1001: "Validation error",
    1002: "Search error",
    1003: "Process error",
    1004: "Invite invalid",
    1005: "Excel worksheet invalid",
    1006: "Bulk selection error",
}
# Answered by a gateway in front of Unicat, not by Unicat: an HTML page, no envelope.
PROXY_ERRORS: dict[int, str] = {
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
WWW_AUTHENTICATE = 'Bearer realm="JWT access to Unicat."'
LANGUAGES = ("en", "nl")
JOB_SAVE_AS_NEW = "bulk_save_as_new_schema_items"

_FIRST_NAMES = ("Ada", "Bram", "Chloé", "Daan", "Eline", "Femke", "Søren", "Zoë", "Ngozi", "Wei")
_LAST_NAMES = ("de Vries", "Jansen", "Müller", "O'Brien", "van den Berg", "Bakker", "Nguyễn")
_SUBJECTS = ("Tidal energy", "Dyke safety", "Peat soils", "Bicycle logistics", "Polder water")
_ASPECTS = ("a review", "new evidence", "field trials", "a model", "lessons learned")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _UnicatError(Exception):
    def __init__(self, code: int, message: str | None = None, info: Any = None) -> None:
        self.message = message or ERRORS.get(code) or PROXY_ERRORS[code]
        super().__init__(self.message)
        self.code = code
        self.info = info if info is not None else {}

    def response(self) -> web.Response:
        if self.code in PROXY_ERRORS:
            return web.Response(
                status=self.code,
                text=f"<html><body><h1>{self.code} {self.message}</h1></body></html>",
                content_type="text/html",
            )
        status = self.code if self.code < 1000 else 422
        headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if self.code == 401 else {}
        body = {
            "success": False,
            "result": {"code": self.code, "message": self.message, "info": self.info},
            "data": {},
        }
        return web.json_response(body, status=status, headers=headers)


@dataclass
class _Job:
    token: str
    name: str
    total: int
    remaining: int
    status: str
    created_on: float
    updated_on: float
    reject_with: str | None = None  # the reason it will be rejected for, instead of processed
    error: str | None = None

    def data(self, project: str) -> dict[str, Any]:
        info: dict[str, Any] = {"total": self.total, "remaining": self.remaining}
        if self.error is not None:
            info["error"] = self.error
        return {
            "project_gid": project,
            "job": self.name,
            "status": self.status,
            "info": info,
            "created_on": self.created_on,
            "updated_on": self.updated_on,
        }


@dataclass(frozen=True)
class _Fault:
    code: int | None  # None: no error, only the delay
    endpoint: str | None  # e.g. "sync/get"; None: any endpoint
    delay: float = 0.0  # seconds before the answer


@dataclass
class _History:
    """The sync stream: global and project items, numbered apart, interleaved in one list."""

    items: list[dict[str, Any]] = field(default_factory=list)
    cc_cursor: int = 0
    project_cursor: int = 0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cursor(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _UnicatError(400, info={name: "a non-negative integer is required"})
    return value


class UnicatSimulator:
    """An in-memory Unicat project with seeded records, a virtual clock and a sync history."""

    def __init__(
        self,
        *,
        project: str,
        api_key: str,
        records: int = 20,
        seed: int = 1,
        latency_ms: int = 0,
        page_size: int = 100,
        jwt_lifetime: float = 3600.0,
        job_steps: int = 3,
        start: float | None = None,
        version: str = "2026.09.001",
        wall_clock: bool = False,
    ) -> None:
        """`wall_clock`: the clock never falls behind real time (a served simulator); else
        it moves only when told to (`advance`) or a little per change (the tests)."""
        if records < 0 or page_size < 1 or job_steps < 1 or jwt_lifetime <= 0:
            raise ValueError("records ≥ 0, page_size ≥ 1, job_steps ≥ 1, jwt_lifetime > 0")
        self.project = str(uuid.UUID(project))
        self._api_key = api_key
        self._rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not crypto
        self._latency = latency_ms / 1000
        self._page_size = page_size
        self._jwt_lifetime = jwt_lifetime
        self._job_steps = job_steps
        self._clock = time.time() if start is None else start
        self._wall_clock = wall_clock
        self._signing_key = secrets.token_bytes(32)
        self._version = version
        self._user = self._gid()
        self._root = self._gid()  # the root record of the tree
        self._definitions: dict[str, dict[str, Any]] = {}
        self._fields: dict[str, dict[str, Any]] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, _Job] = {}
        self._history = _History(
            cc_cursor=self._rng.randint(1000, 5000), project_cursor=self._rng.randint(5000, 9000)
        )
        self._faults: list[_Fault] = []
        self._jobs_held = False
        self._reject_next_job: str | None = None
        self.request_counts: Counter[str] = Counter()  # endpoint (e.g. "sync/get") → requests
        self.tokens_issued = 0  # answers to /auth
        self.jwts: list[str] = []  # every JWT handed out, renewals included
        self._seed(records)

    # ----------------------------------------------------------------- test control

    @property
    def now(self) -> float:
        return self._clock

    @property
    def version(self) -> str:
        return self._version

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._clock += seconds

    def revoke_tokens(self) -> None:
        """A new signing key: every JWT handed out so far is refused from now on."""
        self._signing_key = secrets.token_bytes(32)

    def set_version(self, version: str) -> None:
        self._version = version
        self._append("cc", "UPDATE", "cc.version", version)

    def fail_next(self, code: int, *, count: int = 1, endpoint: str | None = None) -> None:
        """The next `count` requests (to `endpoint`, e.g. "sync/get") fail with `code`."""
        if code not in ERRORS and code not in PROXY_ERRORS:
            raise ValueError(f"not a Unicat error code: {code}")
        self._faults.extend(_Fault(code, endpoint) for _ in range(count))

    def delay_next(self, seconds: float, *, endpoint: str | None = None) -> None:
        """The next request (to `endpoint`) is answered only after `seconds`: a slow server."""
        self._faults.append(_Fault(None, endpoint, seconds))

    def hold_jobs(self, held: bool = True) -> None:
        self._jobs_held = held

    def reject_next_job(self, reason: str) -> None:
        """The next job started is rejected, with `reason`, instead of processed."""
        self._reject_next_job = reason

    def definition_gid(self, name: str) -> str:
        return next(gid for gid, d in self._definitions.items() if d["name"] == name)

    def record_gids(self, definition: str | None = None) -> list[str]:
        wanted = None if definition is None else self.definition_gid(definition)
        return [
            gid
            for gid, record in self._records.items()
            if record["status"] != "deleted" and wanted in (None, record["definition"])
        ]

    def record(self, gid: str) -> dict[str, Any]:
        return copy.deepcopy(self._records[gid])

    def job_status(self, token: str) -> str:
        return self._jobs[token].status

    def latest_cursors(self) -> tuple[int, int]:
        return self._history.cc_cursor, self._history.project_cursor

    def add_record(self, definition: str, fields: dict[str, Any]) -> str:
        gid = self._gid()
        self._tick()
        self._records[gid] = self._new_record(gid, self.definition_gid(definition), fields)
        self._append("project", "INSERT", "records", gid)
        return gid

    def update_record(self, gid: str, fields: dict[str, Any]) -> None:
        record = self._records[gid]
        self._tick()
        for language in LANGUAGES:
            record["fields"][language].update(fields)
        record["title"] = self._title(record["definition"], record["fields"])
        record["updated_on"] = self._clock
        self._append("project", "UPDATE", "records", gid)

    def delete_record(self, gid: str, *, permanent: bool = True) -> None:
        """Permanently: gone, a DELETE item. Otherwise: in the trash (status deleted), an UPDATE."""
        self._tick()
        if permanent:
            del self._records[gid]
            self._append("project", "DELETE", "records", gid)
        else:
            self._records[gid]["status"] = "deleted"
            self._records[gid]["updated_on"] = self._clock
            self._append("project", "UPDATE", "records", gid)

    def save_as_new(self, selection: Any) -> str:
        """What /schema/bulk/save_as_new does: resolve the selection, queue a job."""
        if not isinstance(selection, list) or not selection:
            raise _UnicatError(400, info={"selection": "a non-empty list is required"})
        chosen: set[str] = set()
        for entry in selection:
            chosen |= self._resolve_schema_selection(entry)
        self._tick()
        job = _Job(
            token=self._gid(),
            name=JOB_SAVE_AS_NEW,
            total=len(chosen),
            remaining=len(chosen),
            status="queued",
            created_on=self._clock,
            updated_on=self._clock,
            reject_with=self._reject_next_job or (None if chosen else "nothing to save"),
        )
        self._reject_next_job = None
        self._jobs[job.token] = job
        self._report_job(job, "INSERT")
        return job.token

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        project = "/api/p/{project}"
        app.router.add_post(f"{project}/auth", self._auth)
        app.router.add_post(f"{project}/records/get", self._records_get)
        app.router.add_post(f"{project}/definitions/get", self._definitions_get)
        app.router.add_post(f"{project}/schema/bulk/save_as_new", self._save_as_new)
        app.router.add_post("/sync/get", self._sync_get)
        app.router.add_post("/sync/cursors", self._sync_cursors)
        control = f"{CONTROL_PATH}unicat"
        app.router.add_post(f"{control}/{{definition}}/add", control_route(self._control_add))
        app.router.add_post(f"{control}/record/{{gid}}/touch", control_route(self._control_touch))
        app.router.add_post(f"{control}/record/{{gid}}/delete", control_route(self._control_delete))
        return app

    # ----------------------------------------------------------------- control over HTTP

    async def _control_add(self, request: web.Request) -> dict[str, Any]:
        definition = request.match_info["definition"]
        if definition not in self._definition_fields():
            raise KeyError(f"no definition {definition!r}")
        fields = self._control_fields(definition, await control_body(request))
        gid = self.add_record(definition, fields or self._sample_fields(definition))
        return self._control_state(gid)

    async def _control_touch(self, request: web.Request) -> dict[str, Any]:
        gid = request.match_info["gid"]
        record = self._control_record(gid)
        definition = self._definitions[record["definition"]]["name"]
        fields = self._control_fields(definition, await control_body(request))
        if not fields:
            # Nothing asked for: the field that titles the record is revised.
            first = self._definition_fields()[definition][0]
            fields = {first: f"{record['fields'][LANGUAGES[0]].get(first, '')} (revised)"}
        self.update_record(gid, fields)
        return self._control_state(gid)

    async def _control_delete(self, request: web.Request) -> dict[str, Any]:
        gid = self._control_record(request.match_info["gid"])["gid"]
        self.delete_record(gid)
        return {"gid": gid, "deleted": True}

    def _control_fields(self, definition: str, body: dict[str, Any]) -> dict[str, str]:
        fields = body.get("fields", {})
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise ValueError("fields must be an object of strings")
        known = self._definition_fields()[definition]
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise ValueError(f"{definition} has no field {', '.join(unknown)} ({', '.join(known)})")
        return fields

    def _control_state(self, gid: str) -> dict[str, Any]:
        record = self._records[gid]
        return {
            "gid": gid,
            "definition": self._definitions[record["definition"]]["name"],
            "title": record["title"][LANGUAGES[0]],
        }

    def _control_record(self, gid: str) -> dict[str, Any]:
        if gid not in self._records:
            raise KeyError(f"no record {gid}")
        return self._records[gid]

    def _definition_fields(self) -> dict[str, list[str]]:
        """Each definition's field names, in order, by its name."""
        return {
            definition["name"]: [self._fields[gid]["name"] for gid in definition["fields"]]
            for definition in self._definitions.values()
        }

    # ----------------------------------------------------------------- HTTP

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PATH):
            return await handler(request)  # not the API's: no faults, latency or counts
        endpoint = self._endpoint(request.path)
        self.request_counts[endpoint] += 1
        if self._latency:
            await asyncio.sleep(self._latency)
        fault = self._take_fault(endpoint)
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.code is not None:
                return _UnicatError(fault.code, info={"simulated": True}).response()
        try:
            return await handler(request)
        except _UnicatError as exc:
            return exc.response()

    @staticmethod
    def _endpoint(path: str) -> str:
        if path.startswith("/api/p/"):
            return path.split("/", 4)[4] if path.count("/") >= 4 else path
        return path.removeprefix("/")

    def _take_fault(self, endpoint: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.endpoint is None or fault.endpoint == endpoint:
                return self._faults.pop(index)
        return None

    async def _auth(self, request: web.Request) -> web.Response:
        self._check_project(request.match_info["project"])
        body = await self._body(request, allowed={"api_key", "omit_extended_definitions"})
        key = body.get("api_key")
        if not isinstance(key, str) or not key:
            raise _UnicatError(400, info={"api_key": "required"})
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            raise _UnicatError(403, "Unknown user")
        self.tokens_issued += 1
        result = {
            "user": self._user,
            "user_projects": {self.project: ["api"]},
            "project": self.project,
            "project_members": [self._user],
            "last_backed_up": None,
            "cc.version": self._version,
            "cc.cursor": self._history.cc_cursor,
            "cursor": self._history.project_cursor,
        }
        data = {
            "cc.users": {self._user: {"gid": self._user, "name": "crisync", "username": None}},
            "cc.projects": {self.project: self._project_data()},
            "cc.projects_members": [
                {
                    "project_gid": self.project,
                    "user_gid": self._user,
                    "status": "active",
                    "roles": ["api"],
                    "options": {"rate_limit_per_second": None},
                }
            ],
            "cc.languages": {"en": "English", "nl": "Dutch"},
            "definitions": self._definitions,
            "classes": {},
            "fields": self._fields,
            "layouts": {},
            "queries": {},
        }
        return self._answer(result, data, jwt=self._issue_jwt())

    async def _records_get(self, request: web.Request) -> web.Response:
        renewed = self._authorize(request)
        body = await self._body(request, allowed={"record", "records", "language", "languages"})
        languages = self._languages(body)
        gids, single = self._one_or_many(body, "record", "records")
        found: dict[str, Any] = {}
        for gid in gids:
            if gid not in self._records:
                raise _UnicatError(422, "Unprocessable Entity - no such record", {"record": gid})
            found[gid] = self._localized(self._records[gid], languages)
        result = {"record": gids[0]} if single else {"records": gids}
        return self._answer(result, {"records": found}, jwt=renewed)

    async def _definitions_get(self, request: web.Request) -> web.Response:
        renewed = self._authorize(request)
        body = await self._body(request, allowed={"definition", "definitions"})
        gids, single = self._one_or_many(body, "definition", "definitions")
        missing = [gid for gid in gids if gid not in self._definitions]
        if missing:
            raise _UnicatError(422, info={"definition": missing[0]})
        result = {"definition": gids[0]} if single else {"definitions": gids}
        data = {"definitions": {gid: self._definitions[gid] for gid in gids}}
        return self._answer(result, data, jwt=renewed)

    async def _save_as_new(self, request: web.Request) -> web.Response:
        renewed = self._authorize(request)
        body = await self._body(request, allowed={"selection"})
        token = self.save_as_new(body.get("selection"))
        return self._answer({"job.token": token}, {}, jwt=renewed)

    async def _sync_get(self, request: web.Request) -> web.Response:
        renewed = self._authorize(request)
        body = await self._body(request, allowed={"cc_cursor", "project", "cursor"})
        cc_cursor = _cursor(body, "cc_cursor")
        project_cursor: int | None = None
        if "project" in body:
            if body["project"] != self.project:
                raise _UnicatError(403, "Forbidden - not a member of this project")
            project_cursor = _cursor(body, "cursor")
        if cc_cursor > self._history.cc_cursor or (
            project_cursor is not None and project_cursor > self._history.project_cursor
        ):
            raise _UnicatError(1006, "Selection error - cursor is invalid", {"cursor": "unknown"})
        self._advance_jobs()
        wanted = [
            item
            for item in self._history.items
            if (item["type"] == "cc" and item["cursor"] > cc_cursor)
            or (
                project_cursor is not None
                and item["type"] != "cc"
                and item["cursor"] > project_cursor
            )
        ]
        result: dict[str, Any] = {"sync": wanted[: self._page_size]}
        if len(wanted) > self._page_size:
            result["warning"] = "More sync data is available, ask again with the new cursors."
        return self._answer(result, {}, jwt=renewed)

    async def _sync_cursors(self, request: web.Request) -> web.Response:
        renewed = self._authorize(request)
        await self._body(request, allowed={"project"})
        result = {"cc.cursor": self._history.cc_cursor, "cursor": self._history.project_cursor}
        return self._answer(result, {}, jwt=renewed)

    # ----------------------------------------------------------------- auth

    def _issue_jwt(self) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "sub": self._user,
            "project": self.project,
            "iat": self._clock,
            "exp": self._clock + self._jwt_lifetime,
            "jti": secrets.token_hex(8),
        }
        payload = _b64(json.dumps(claims).encode())
        jwt = f"{header}.{payload}.{self._signature(header, payload)}"
        self.jwts.append(jwt)
        return jwt

    def _signature(self, header: str, payload: str) -> str:
        digest = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256)
        return _b64(digest.digest())

    def _authorize(self, request: web.Request) -> str | None:
        """Check the bearer JWT; returns a renewed one when the presented one is past half-life."""
        if "project" in request.match_info:
            self._check_project(request.match_info["project"])
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        claims = self._verified_claims(token) if scheme == "Bearer" else None
        if claims is None or claims["exp"] <= self._clock:
            raise _UnicatError(401, "Permission denied")
        if claims["exp"] - self._clock < self._jwt_lifetime / 2:
            return self._issue_jwt()
        return None

    def _verified_claims(self, token: str) -> dict[str, Any] | None:
        try:
            header, payload, signature = token.split(".")
            if not hmac.compare_digest(signature, self._signature(header, payload)):
                return None
            claims = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(claims, dict) or claims.get("project") != self.project:
            return None
        return claims

    def _check_project(self, project: str) -> None:
        if project != self.project:
            raise _UnicatError(403, "Forbidden - not a member of this project")

    # ----------------------------------------------------------------- helpers

    @staticmethod
    async def _body(request: web.Request, *, allowed: set[str]) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise _UnicatError(400, info={"body": "not JSON"}) from None
        if not isinstance(body, dict):
            raise _UnicatError(400, info={"body": "a JSON object is required"})
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise _UnicatError(400, info={"unknown parameters": unknown})
        return body

    @staticmethod
    def _one_or_many(body: dict[str, Any], one: str, many: str) -> tuple[list[str], bool]:
        # The reference's parameter matching: the single form wins when both are given.
        if isinstance(body.get(one), str):
            return [body[one]], True
        values = body.get(many)
        if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
            return list(values), False
        raise _UnicatError(400, info={one: "a gid is required", many: "or a list of gids"})

    @staticmethod
    def _languages(body: dict[str, Any]) -> list[str]:
        asked: list[Any] = []
        if "language" in body:
            asked.append(body["language"])
        if "languages" in body:
            if not isinstance(body["languages"], list):
                raise _UnicatError(400, info={"languages": "a list is required"})
            asked.extend(body["languages"])
        if not all(language in LANGUAGES for language in asked):
            raise _UnicatError(400, info={"language": f"project languages are {LANGUAGES}"})
        return asked or list(LANGUAGES)

    @staticmethod
    def _localized(record: dict[str, Any], languages: list[str]) -> dict[str, Any]:
        localized = copy.deepcopy(record)
        for part in ("title", "fields"):
            localized[part] = {k: v for k, v in localized[part].items() if k in languages}
        return localized

    @staticmethod
    def _answer(result: dict[str, Any], data: dict[str, Any], *, jwt: str | None) -> web.Response:
        headers = {"Authorization": jwt} if jwt else {}
        return web.json_response({"success": True, "result": result, "data": data}, headers=headers)

    def _resolve_schema_selection(self, entry: Any) -> set[str]:
        schema_items = self._definitions.keys() | self._fields.keys()
        if isinstance(entry, str):
            if entry not in schema_items:
                raise _UnicatError(1006, info={"selection": entry})
            return {entry}
        if isinstance(entry, dict) and isinstance(entry.get("search"), dict):
            excluded = entry.get("exclude") or []
            if not isinstance(excluded, list):
                raise _UnicatError(1006, info={"exclude": "a list is required"})
            return set(self._definitions) - set(excluded)
        # Schema items have no children selection (the reference's bulk operations page).
        raise _UnicatError(1006, info={"selection": entry})

    def _report_job(self, job: _Job, action: str) -> None:
        self._append("cc", action, "jobs", job.token, data=job.data(self.project))

    def _advance_jobs(self) -> None:
        if self._jobs_held:
            return
        for job in self._jobs.values():
            if job.status not in ("queued", "processing"):
                continue
            self._tick()
            job.updated_on = self._clock
            if job.reject_with is not None:
                job.status, job.error = "rejected", job.reject_with
            else:
                job.remaining = max(0, job.remaining - math.ceil(job.total / self._job_steps))
                job.status = "processing" if job.remaining else "done"
            self._report_job(job, "UPDATE")

    def _append(self, stream: str, action: str, data_type: str, key: str, data: Any = None) -> None:
        history = self._history
        if stream == "cc":
            history.cc_cursor += 1
            cursor = history.cc_cursor
        else:
            history.project_cursor += 1
            cursor = history.project_cursor
        item: dict[str, Any] = {
            "type": stream,
            "cursor": cursor,
            "action": action,
            "data_type": data_type,
            "data_key": key,
        }
        if data is not None:
            item["data"] = data
        history.items.append(item)

    def _tick(self) -> None:
        """Every change happens at its own instant."""
        self._clock += 0.001 + self._rng.random() / 100
        if self._wall_clock:
            self._clock = max(self._clock, time.time())

    def _gid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _project_data(self) -> dict[str, Any]:
        return {
            "gid": self.project,
            "name": "Simulated research catalogue",
            "icon": None,
            "owner": self._gid(),
            "status": "active",
            "options": {
                "languages": list(LANGUAGES),
                "channels": {},
                "orderedchannels": [],
                "orderings": {},
                "orderedorderings": [],
            },
        }

    def _title(self, definition: str, fields: dict[str, dict[str, Any]]) -> dict[str, str]:
        name = self._definitions[definition]["name"]
        titles = {}
        for language in LANGUAGES:
            values = fields[language]
            if name == "person":
                titles[language] = f"{values.get('firstname', '')} {values.get('lastname', '')}"
            else:
                titles[language] = str(values.get("title") or values.get("name") or "")
        return titles

    def _new_record(self, gid: str, definition: str, fields: dict[str, Any]) -> dict[str, Any]:
        root = None if gid == self._root else self._root
        by_language = {language: dict(fields) for language in LANGUAGES}
        return {
            "gid": gid,
            "canonical": gid,
            "parent": root,
            "backlinks": [],
            "is_link": False,
            "status": "published",
            "treelevel": 0 if root is None else 1,
            "path": [gid] if root is None else [root, gid],
            "title": self._title(definition, by_language),
            "channels": [],
            "orderings": [],
            "childcount": 0,
            "definition": definition,
            "created_on": self._clock,
            "updated_on": self._clock,
            "fields": by_language,
        }

    def _sample_fields(self, definition: str) -> dict[str, str]:
        """Made-up field values of a record of `definition` (a folder: none)."""
        rng = self._rng
        if definition == "publication":
            subject = f"{rng.choice(_SUBJECTS)}: {rng.choice(_ASPECTS)}"
            return {"title": subject, "year": str(rng.randint(1990, 2025))}
        if definition == "person":
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            email = f"{first[0]}.{last.replace(' ', '')}@example.nl".lower()
            return {"firstname": first, "lastname": last, "email": email}
        return {}

    def _define(self, name: str, label: str, field_names: list[str]) -> str:
        field_gids = []
        for field_name in field_names:
            gid = self._gid()
            self._fields[gid] = {
                "gid": gid,
                "original": None,
                "name": field_name,
                "type": "textline",
                "is_localized": field_name == "title",
                "is_required": False,
                "label": {"en": field_name.capitalize(), "nl": field_name.capitalize()},
                "initial": {},
                "options": {},
                "metadata": {},
            }
            field_gids.append(gid)
        gid = self._gid()
        self._definitions[gid] = {
            "gid": gid,
            "original": None,
            "name": name,
            "label": {"en": label, "nl": label},
            "classes": [],
            "fields": field_gids,
            "titlefield": field_gids[0] if field_gids else None,
            "fieldlists": {},
            "layout": None,
            "childdefinitions": [],
            "is_base": False,
            "is_new": False,
            "is_extended": False,
            "is_working_copy": False,
            "metadata": {},
        }
        self._append("project", "INSERT", "definitions", gid)
        return gid

    def _seed(self, records: int) -> None:
        self._append("cc", "INSERT", "cc.users", self._user)
        self._append("cc", "UPDATE", "cc.version", self._version)
        folder = self._define("folder", "Folder", ["name"])
        self._define("person", "Person", ["firstname", "lastname", "email"])
        self._define("publication", "Publication", ["title", "year"])
        self._records[self._root] = self._new_record(self._root, folder, {"name": "Catalogue"})
        self._append("project", "INSERT", "records", self._root)
        rng = self._rng
        for number in range(records):
            definition = "publication" if number % 3 == 2 else "person"
            gid = self.add_record(definition, self._sample_fields(definition))
            if rng.random() < 0.2:  # a later edit: the history holds the record twice
                edit = {"year": "2024"} if number % 3 == 2 else {"email": f"{gid[:8]}@example.nl"}
                self.update_record(gid, edit)
