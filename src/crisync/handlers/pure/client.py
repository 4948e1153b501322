"""The Pure API client: JSON over HTTP with the api-key header, errors classified."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import structlog

from crisync.backoff import retrying
from crisync.errors import (
    CrisyncError,
    PermanentError,
    classify_exception,
    classify_status,
    parse_retry_after,
)
from crisync.handlers.pure.config import PureConfig
from crisync.handlers.pure.pacing import PurePacing
from crisync.same_origin import same_origin_only
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.pure")

T = TypeVar("T")

# Tries of one replayable request: a transient failure (5xx, 429, a timeout) is asked
# again at once, so that one bad answer among the several requests of an object does not
# send the whole object back to the dispatcher's slower retries. Longer outages still do.
REQUEST_ATTEMPTS = 3
REQUEST_BACKOFF_BASE = 0.25
REQUEST_BACKOFF_CAP = 2.0
# Answers whose Retry-After pauses every request to Pure (too many requests, overloaded).
THROTTLED_STATUSES = frozenset({429, 503})


class PureConflictError(CrisyncError):
    """409 from Pure: a stale version on update, or already (un)locked on an action."""

    retriable = True


class PureClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: PureConfig,
        *,
        telemetry: Telemetry,
        pacing: PurePacing | None = None,
    ) -> None:
        self._session = session
        self._telemetry = telemetry
        self._base = config.url
        self._headers = {"api-key": config.api_key.get_secret_value(), "Accept": "application/json"}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._middlewares = (same_origin_only(config.url, api="pure"),)
        self.pacing = pacing or PurePacing(config, telemetry=telemetry)

    async def create(self, pure_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Never replayed here: an answer lost after Pure stored the object would make a
        second one. The caller finds it by its PrimaryId instead (replicate._create_once)."""
        return await self._json("PUT", f"/{pure_type}", body, expect=(201, 200), replayable=False)

    async def search(self, pure_type: str, text: str, *, offset: int = 0, size: int = 100) -> Page:
        """One page of a full-text search; callers check what they need in its items."""
        query = {"searchString": text, "offset": offset, "size": size}
        return _page(await self._json("POST", f"/{pure_type}/search", query, expect=(200,)))

    async def list_page(
        self, pure_type: str, *, offset: int, size: int, keep: frozenset[str] | None = None
    ) -> Page:
        """One page of every object of a type, in Pure's order.

        With `keep`, every object in it (a JSON object with a uuid, references within too)
        holds only its uuid and those properties, from the moment it is parsed: a scan
        reads a value or two of 1,000 objects, which parsed whole are 8 MB a page.
        """
        path = f"/{pure_type}?{urlencode({'offset': offset, 'size': size})}"
        hook = None if keep is None else partial(_kept, keep | {"uuid"})
        return _page(await self._json("GET", path, None, expect=(200,), object_hook=hook))

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
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        expect: tuple[int, ...],
        *,
        replayable: bool = True,
        object_hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        raw = await self._request(method, path, body, expect, replayable=replayable)
        try:
            document = json.loads(raw, object_hook=object_hook)
        except ValueError:
            raise PermanentError(f"{method} {path}: answer is not JSON", api="pure") from None
        if not isinstance(document, dict):
            raise PermanentError(f"{method} {path}: answer is not a JSON object", api="pure")
        return document

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        expect: tuple[int, ...],
        *,
        replayable: bool = True,
    ) -> bytes:
        """One request; a replayable one is tried again after a transient failure.

        Replaying is safe for everything but a create: reads change nothing, an update
        carries the version it read (a replay after a lost answer meets a 409), and a
        lock, unlock or delete already done answers 409 or 404, which callers expect.
        A 409 is an answer for the caller, never replayed.
        """
        # Serialised once, before any slot is taken: a slot is one of the requests Pure
        # lets the site have in flight, held only while one is.
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        send = partial(self._send, method, path, data, expect)
        if not replayable:
            return await send()
        return await replaying(send, f"{method} {path}")

    async def _send(
        self, method: str, path: str, data: bytes | None, expect: tuple[int, ...]
    ) -> bytes:
        async with self.pacing.turn():
            started, status = time.monotonic(), "failed"
            try:
                async with self._session.request(
                    method,
                    self._base + path,
                    data=data,
                    headers=self._headers if data is None else self._json_headers,
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
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    if response.status in THROTTLED_STATUSES:
                        retry_after = self.pacing.throttled(
                            response.status, retry_after, f"{method} {path}"
                        )
                    raise classify_status("pure", response.status, message, retry_after)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
                raise classify_exception("pure", exc) from exc
            finally:
                self._telemetry.request("pure", method, status, time.monotonic() - started)


async def replaying(operation: Callable[[], Awaitable[T]], what: str) -> T:
    """Run one Pure operation, trying it again at once after a transient failure.

    The rule for every replayable request, and for the callers that replay a sequence of
    them, such as a create made safe to repeat by a search for what it may have stored.
    A 409 is an answer for the caller (a stale version, already locked), never replayed.
    """

    def on_retry(attempt: int, delay: float, exc: CrisyncError) -> None:
        log.info(
            "pure.retry",
            operation=what,
            attempt=attempt,
            delay=round(delay, 2),
            status=exc.status,
            error=exc.message,
        )

    return await retrying(
        operation,
        attempts=REQUEST_ATTEMPTS,
        on_retry=on_retry,
        base=REQUEST_BACKOFF_BASE,
        cap=REQUEST_BACKOFF_CAP,
        answers=(PureConflictError,),
    )


def _kept(keep: frozenset[str], parsed: dict[str, Any]) -> dict[str, Any]:
    if "uuid" not in parsed:
        return parsed  # not a Pure object: a value within one (a name, an identifier)
    return {key: value for key, value in parsed.items() if key in keep}


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    count: int  # how many there are in all, on every page

    def more_after(self, offset: int) -> bool:
        return bool(self.items) and offset + len(self.items) < self.count


# Search hits read by the first request while looking for one PrimaryId: an object that
# carries it matches every word of it and ranks among the first.
PRIMARY_ID_SEARCH_PAGE = 100
# Hits read by each further request, to prove it absent: the contract's largest page.
PRIMARY_ID_SEARCH_MORE = 1000


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
    are read page by page until the one carrying the identifier turns up. When none
    does, every object sharing a word with the value is read, in the largest pages the
    contract allows: small ones made that cost a request per hundred objects in Pure.
    """
    offset = 0
    while True:
        size = PRIMARY_ID_SEARCH_PAGE if offset == 0 else PRIMARY_ID_SEARCH_MORE
        page = await pure.search(pure_type, value, offset=offset, size=size)
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
