"""The Unicat API client: API-key auth, the JWT's lifecycle, the response envelope.

- ``POST /api/p/{project}/auth {"api_key"}`` answers the JWT in the ``Authorization``
  header. Any later response may carry a renewed JWT there; it is adopted at once.
- A 401 with ``WWW-Authenticate`` (expired JWT) is cured by one new ``/auth`` and one
  repeat of the request; a second refusal is a CredentialError, as is a refused key.
- Every answer is ``{"success", "result", "data"}``; a failure's ``result`` is
  ``{"code", "message", "info"}`` and becomes a typed error in ``errors.classify_unicat``.

The API key and the JWT are secrets: they appear in no log line and no error message, and
go to no other host than the configured one (`crisync.same_origin`).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from crisync.errors import (
    CredentialError,
    PermanentError,
    RetriableError,
    classify_exception,
    classify_status,
)
from crisync.listener.unicat.config import KIND_OF_DATA_TYPE, UnicatConfig
from crisync.listener.unicat.errors import classify_unicat
from crisync.same_origin import same_origin_only
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.listener.unicat")

# Unicat's "Unprocessable Entity": the item does not exist (any more).
GONE = 422
INFO_LIMIT = 200  # characters of an error's info kept in its message


@dataclass(frozen=True)
class SyncPage:
    items: list[Any]
    more: bool  # the answer held "warning": more is waiting, ask again at once


class _JwtRefusedError(Exception):
    """401 with WWW-Authenticate: the JWT expired or is unknown; a new /auth may cure it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnicatClient:
    def __init__(
        self, session: aiohttp.ClientSession, config: UnicatConfig, *, telemetry: Telemetry
    ) -> None:
        self._session = session
        self._config = config
        self._telemetry = telemetry
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._project_api = f"{config.url}/api/p/{config.project}"
        self._origin = config.url  # the sync API lives at /sync beside /api
        self._middlewares = (same_origin_only(config.url, api="unicat"),)
        self._jwt: str | None = None
        self._auth_lock = asyncio.Lock()
        self._definition_names: dict[str, str] = {}

    async def sync_get(self, cc_cursor: int, cursor: int) -> SyncPage:
        """The changes after both cursors: global (cc) items and this project's items."""
        body = {"cc_cursor": cc_cursor, "project": self._config.project, "cursor": cursor}
        result, _ = await self._call(self._origin, "/sync/get", body)
        items = result.get("sync")
        if not isinstance(items, list):
            raise PermanentError("POST /sync/get: answer has no sync list", api="unicat")
        return SyncPage(items, more="warning" in result)

    async def get_item(self, data_type: str, gid: str) -> dict[str, Any] | None:
        """One project item at its current state; None when it no longer exists."""
        # Each data type's endpoint names its gid parameter with the type's singular.
        endpoint, parameter = f"/{data_type}/get", KIND_OF_DATA_TYPE[data_type]
        try:
            _, data = await self._call(self._project_api, endpoint, {parameter: gid})
        except PermanentError as exc:
            if exc.status == GONE:
                return None
            raise
        item = (data.get(data_type) or {}).get(gid)
        if not isinstance(item, dict):
            raise PermanentError(f"POST {endpoint}: answer lacks {data_type} {gid}", api="unicat")
        return item

    async def definition_name(self, gid: str) -> str | None:
        """A definition's name, read once and remembered; None when it does not exist."""
        if gid not in self._definition_names:
            definition = await self.get_item("definitions", gid)
            if definition is None:
                return None
            self._remember_definitions({gid: definition})
        return self._definition_names.get(gid)

    def forget_definition(self, gid: str) -> None:
        """A definition changed: read its name again when next needed."""
        self._definition_names.pop(gid, None)

    # ----------------------------------------------------------------- requests

    async def _call(
        self, base: str, endpoint: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """POST with the JWT; an expired one is replaced once by a new /auth."""
        jwt = await self._current_jwt()
        try:
            return await self._post(base, endpoint, body, jwt)
        except _JwtRefusedError:
            log.info("unicat.reauthenticating", endpoint=endpoint)
            await self._reauthenticate(stale=jwt)
        try:
            return await self._post(base, endpoint, body, self._jwt)
        except _JwtRefusedError as exc:
            raise CredentialError(
                f"POST {endpoint}: {exc.message}, even with a new JWT", api="unicat", status=401
            ) from None

    async def _current_jwt(self) -> str | None:
        async with self._auth_lock:
            if self._jwt is None:
                await self._authenticate()
            return self._jwt

    async def _reauthenticate(self, *, stale: str | None) -> None:
        async with self._auth_lock:
            if self._jwt is not None and self._jwt != stale:
                return  # another request has renewed it meanwhile
            self._jwt = None
            await self._authenticate()

    async def _authenticate(self) -> None:
        key = self._config.api_key.get_secret_value()
        try:
            _, data = await self._post(self._project_api, "/auth", {"api_key": key}, None)
        except _JwtRefusedError as exc:
            raise CredentialError(f"POST /auth: {exc.message}", api="unicat", status=401) from None
        if self._jwt is None:
            raise PermanentError("POST /auth: the answer carries no JWT", api="unicat")
        definitions = data.get("definitions")
        if isinstance(definitions, dict):
            self._remember_definitions(definitions)
        log.info("unicat.authenticated", project=self._config.project)

    async def _post(
        self, base: str, endpoint: str, body: dict[str, Any], jwt: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        headers = {"Accept": "application/json"}
        if jwt is not None:
            headers["Authorization"] = f"Bearer {jwt}"
        started, status = time.monotonic(), "failed"
        try:
            async with self._session.post(
                base + endpoint,
                json=body,
                headers=headers,
                timeout=self._timeout,
                middlewares=self._middlewares,
            ) as response:
                status = str(response.status)
                raw = await response.read()
                renewed = response.headers.get("Authorization")
                if renewed:
                    self._jwt = renewed.removeprefix("Bearer ").strip()
                refused = response.status == 401 and "WWW-Authenticate" in response.headers
                http_status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
            raise classify_exception("unicat", exc) from exc
        finally:
            self._telemetry.request("unicat", "POST", status, time.monotonic() - started)
        if refused and jwt is not None:
            raise _JwtRefusedError("401 Unauthorized (JWT expired or unknown)")
        return _unwrap(endpoint, http_status, raw)

    def _remember_definitions(self, definitions: dict[str, Any]) -> None:
        for gid, definition in definitions.items():
            if isinstance(definition, dict) and isinstance(definition.get("name"), str):
                self._definition_names[gid] = definition["name"]


def _unwrap(endpoint: str, http_status: int, raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """`result` and `data` of a successful answer; a failure's envelope becomes its error."""
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict) or "success" not in document:
        if 200 <= http_status < 300:
            # A cut-off answer, or something between us and Unicat: asking again may help.
            raise RetriableError(f"POST {endpoint}: answer is not JSON", api="unicat")
        raise classify_status("unicat", http_status, f"POST {endpoint}: HTTP {http_status}")
    result = document.get("result")
    data = document.get("data")
    if document["success"] is True and isinstance(result, dict):
        return result, data if isinstance(data, dict) else {}
    if isinstance(result, dict) and isinstance(result.get("code"), int):
        message = f"{result.get('message') or 'no message'}"
        info = result.get("info")
        if info and endpoint != "/auth":  # what /auth echoes stays out of logs
            message += f" {json.dumps(info, ensure_ascii=False)[:INFO_LIMIT]}"
        raise classify_unicat(f"POST {endpoint}", result["code"], message, http_status)
    raise classify_status("unicat", http_status, f"POST {endpoint}: unsuccessful, no error")
