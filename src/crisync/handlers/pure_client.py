"""The Pure API client: JSON over HTTP with the api-key header, errors classified."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from crisync.config.model import PureConfig
from crisync.errors import (
    CrisyncError,
    PermanentError,
    classify_exception,
    classify_status,
    parse_retry_after,
)
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
        self._slots = asyncio.Semaphore(config.concurrency)

    async def create(self, pure_type: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("PUT", f"/{pure_type}", body, expect=(201, 200))

    async def search(self, pure_type: str, text: str, size: int = 20) -> list[dict[str, Any]]:
        """Full-text search; callers check what they need in the items it returns."""
        found = await self._json(
            "POST", f"/{pure_type}/search", {"searchString": text, "size": size}, expect=(200,)
        )
        items = found.get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def get(self, pure_type: str, uuid: str) -> dict[str, Any]:
        """The current object; a 301 after a merge in Pure is followed to the new uuid."""
        return await self._json("GET", f"/{pure_type}/{uuid}", None, expect=(200,))

    async def update(self, pure_type: str, uuid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("PUT", f"/{pure_type}/{uuid}", body, expect=(200,))

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
            started, status = time.monotonic(), "failed"
            try:
                async with self._session.request(
                    method,
                    self._base + path,
                    json=body,
                    headers=self._headers,
                    timeout=self._timeout,
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
