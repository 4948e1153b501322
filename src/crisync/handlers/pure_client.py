"""The Pure API client: JSON over HTTP with the api-key header, errors classified."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiolimiter import AsyncLimiter

from crisync.config.model import PureConfig
from crisync.errors import (
    CrisyncError,
    PermanentError,
    classify_exception,
    classify_status,
    parse_retry_after,
)
from crisync.same_origin import same_origin_only
from crisync.telemetry import Telemetry


class PureConflictError(CrisyncError):
    """409 from Pure: a stale version on update, or already (un)locked on an action."""

    retriable = True


class PureClient:
    def __init__(
        self, session: aiohttp.ClientSession, config: PureConfig, *, telemetry: Telemetry
    ) -> None:
        self._session = session
        self._telemetry = telemetry
        self._base = config.url
        self._headers = {"api-key": config.api_key.get_secret_value(), "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._middlewares = (same_origin_only(config.url, api="pure"),)
        self._slots = asyncio.Semaphore(config.concurrency)
        # At most rate_limit requests in any second; bursts up to that many are fine.
        self._pace = None if config.rate_limit is None else AsyncLimiter(config.rate_limit, 1.0)

    async def create(self, pure_type: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("PUT", f"/{pure_type}", body, expect=(201, 200))

    async def search(self, pure_type: str, text: str, *, offset: int = 0, size: int = 100) -> Page:
        """One page of a full-text search; callers check what they need in its items."""
        query = {"searchString": text, "offset": offset, "size": size}
        return _page(await self._json("POST", f"/{pure_type}/search", query, expect=(200,)))

    async def list_page(self, pure_type: str, *, offset: int, size: int) -> Page:
        """One page of every object of a type, in Pure's order."""
        path = f"/{pure_type}?{urlencode({'offset': offset, 'size': size})}"
        return _page(await self._json("GET", path, None, expect=(200,)))

    async def get(self, pure_type: str, uuid: str) -> dict[str, Any]:
        """The current object; a 301 after a merge in Pure is followed to the new uuid."""
        return await self._json("GET", f"/{pure_type}/{uuid}", None, expect=(200,))

    async def update(self, pure_type: str, uuid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("PUT", f"/{pure_type}/{uuid}", body, expect=(200,))

    async def delete(self, pure_type: str, uuid: str) -> bool:
        """True when this call deleted it, False when Pure had no such object."""
        try:
            await self._request("DELETE", f"/{pure_type}/{uuid}", None, expect=(204,))
        except PermanentError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def lock(self, pure_type: str, uuid: str) -> bool:
        """True when this call locked it, False when it was locked already."""
        return await self._action(pure_type, uuid, "lock")

    async def unlock(self, pure_type: str, uuid: str) -> bool:
        return await self._action(pure_type, uuid, "unlock")

    async def _action(self, pure_type: str, uuid: str, action: str) -> bool:
        try:
            await self._request(
                "POST", f"/{pure_type}/{uuid}/actions/{action}", None, expect=(204,)
            )
        except PureConflictError:
            return False
        return True

    async def _json(
        self, method: str, path: str, body: dict[str, Any] | None, expect: tuple[int, ...]
    ) -> dict[str, Any]:
        raw = await self._request(method, path, body, expect)
        try:
            document = json.loads(raw)
        except ValueError:
            raise PermanentError(f"{method} {path}: answer is not JSON", api="pure") from None
        if not isinstance(document, dict):
            raise PermanentError(f"{method} {path}: answer is not a JSON object", api="pure")
        return document

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None, expect: tuple[int, ...]
    ) -> bytes:
        async with self._slots:
            if self._pace is not None:
                await self._pace.acquire()
            started, status = time.monotonic(), "failed"
            try:
                async with self._session.request(
                    method,
                    self._base + path,
                    json=body,
                    headers=self._headers,
                    timeout=self._timeout,
                    middlewares=self._middlewares,
                ) as response:
                    status = str(response.status)
                    raw = await response.read()
                    if response.status in expect:
                        return raw
                    detail = _problem_detail(raw) or f"HTTP {response.status}"
                    message = f"{method} {path}: {detail}"
                    if response.status == 409:
                        raise PureConflictError(message, api="pure", status=409)
                    raise classify_status(
                        "pure",
                        response.status,
                        message,
                        parse_retry_after(response.headers.get("Retry-After")),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
                raise classify_exception("pure", exc) from exc
            finally:
                self._telemetry.request("pure", method, status, time.monotonic() - started)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    count: int  # how many there are in all, on every page

    def more_after(self, offset: int) -> bool:
        return bool(self.items) and offset + len(self.items) < self.count


# Search hits read per request while looking for one PrimaryId.
PRIMARY_ID_SEARCH_PAGE = 100


def has_primary_id(item: dict[str, Any], id_source: str, value: str | None = None) -> bool:
    """Whether a Pure object carries a PrimaryId of this idSource (and value, if given)."""
    return any(
        identifier.get("typeDiscriminator") == "PrimaryId"
        and identifier.get("idSource") == id_source
        and (value is None or identifier.get("value") == value)
        for identifier in item.get("identifiers") or []
        if isinstance(identifier, dict)
    )


async def find_by_primary_id(
    pure: PureClient, pure_type: str, id_source: str, value: str
) -> dict[str, Any] | None:
    """The Pure object carrying exactly this PrimaryId, if there is one.

    Pure's search is full-text: the value's words match other objects too, so the hits
    are read page by page until the one carrying the identifier turns up.
    """
    offset = 0
    while True:
        page = await pure.search(pure_type, value, offset=offset, size=PRIMARY_ID_SEARCH_PAGE)
        for item in page.items:
            if has_primary_id(item, id_source, value):
                return item
        if not page.more_after(offset):
            return None
        offset += len(page.items)


def _page(document: dict[str, Any]) -> Page:
    items = document.get("items") or []
    count = document.get("count")
    return Page(
        [item for item in items if isinstance(item, dict)],
        count if isinstance(count, int) else len(items),
    )


def _problem_detail(raw: bytes) -> str | None:
    """title and detail of an RFC 7807 problem, with validation errors when present."""
    try:
        problem = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(problem, dict):
        return None
    parts = [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        parts.append("; ".join(str(e) for e in errors[:5]))
    return " - ".join(parts) or None
