"""The Elements API client: Basic auth, polite gaps, a size cap, errors classified."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import aiohttp
import structlog
from multidict import CIMultiDictProxy

from crisync.errors import PermanentError, classify_exception, parse_retry_after
from crisync.listener.elements.atom import (
    ElementsObject,
    FeedPage,
    RelationshipPage,
    parse_error,
    parse_feed,
    parse_relationships,
)
from crisync.listener.elements.config import ElementsConfig
from crisync.listener.elements.errors import classify_elements_error
from crisync.state.http_validators import Validators
from crisync.telemetry import Telemetry

log = structlog.get_logger("crisync.listener.elements")

# Redirects followed for one request (PATCH answers 303; proxies may add their own).
MAX_REDIRECTS = 5


class ResponseTooLargeError(PermanentError):
    """A response above [elements] max_response_bytes: refused before it fills memory."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response larger than {limit} bytes; refused", api="elements")


@dataclass(frozen=True)
class Answer:
    status: int  # 2xx, or 304 to a conditional request
    body: bytes
    date: str | None  # the HTTP Date: the server's clock when it answered
    validators: Validators


@dataclass(frozen=True)
class ObjectFetch:
    """A conditional GET of one object: `obj` is None when it is unchanged (304)."""

    url: str
    obj: ElementsObject | None
    validators: Validators


class ElementsClient:
    """Requests to the Elements API: Basic auth, polite gaps, a size cap, errors classified.

    Links and redirects that name another host than the configured URL are moved to it:
    the credentials go to no other host.
    """

    def __init__(
        self, session: aiohttp.ClientSession, config: ElementsConfig, *, telemetry: Telemetry
    ) -> None:
        self._session = session
        self._config = config
        self._telemetry = telemetry
        self._base = urlsplit(config.url)
        self._headers = {
            "Authorization": aiohttp.encode_basic_auth(
                config.username, config.password.get_secret_value()
            )
        }
        self._gap_lock = asyncio.Lock()
        self._last_request = 0.0
        self._foreign_hosts: set[str] = set()

    def object_url(self, category_feed: str, object_id: str) -> str:
        return f"{self._config.url}/{category_feed}/{quote(object_id, safe='')}"

    def on_base(self, link: str, *, relative_to: str | None = None) -> str:
        """`link` made absolute, on the configured scheme and host; a rewrite is logged once."""
        parts = urlsplit(urljoin(relative_to or self._config.url + "/", link))
        if (parts.scheme, parts.netloc) == (self._base.scheme, self._base.netloc):
            return urlunsplit(parts)
        if parts.netloc not in self._foreign_hosts:
            self._foreign_hosts.add(parts.netloc)
            log.warning(
                "elements.link_rewritten",
                link_host=parts.netloc,
                base_host=self._base.netloc,
                link=urlunsplit(parts),
            )
        return urlunsplit(parts._replace(scheme=self._base.scheme, netloc=self._base.netloc))

    async def get_feed(self, url: str) -> tuple[FeedPage, datetime]:
        """One feed page and the server's clock (HTTP Date) when it answered."""
        answer = await self._send("GET", url)
        return self._page(answer, url), _server_date(answer.date)

    async def get_object(
        self, category_feed: str, object_id: str, validators: Validators | None = None
    ) -> ObjectFetch:
        """GET /{cat}/{id}, conditional on the validators of the last answer crisync kept."""
        url = self.object_url(category_feed, object_id)
        headers = {}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        answer = await self._send("GET", url, headers=headers)
        if answer.status == 304:
            return ObjectFetch(url, None, answer.validators or validators or Validators(None, None))
        objects = self._page(answer, url).objects
        if len(objects) != 1:
            raise PermanentError(f"{url} answered {len(objects)} objects, not one", api="elements")
        return ObjectFetch(url, objects[0], answer.validators)

    async def get_relationships(self, url: str, involved: tuple[str, str]) -> RelationshipPage:
        """A page of the relationships (or suggestions) of the `involved` object."""
        return parse_relationships((await self._send("GET", url)).body, involved)

    async def get_document(self, path: str) -> bytes:
        """The body of a GET below the API URL, e.g. /publication/types."""
        return (await self._send("GET", self._config.url + path)).body

    async def patch_record(
        self, category: str, source: str, proprietary_id: str, document: bytes
    ) -> FeedPage:
        """PATCH /{cat}/records/{source}/{proprietary-id} with an update-record document."""
        url = (
            f"{self._config.url}/{category}/records/"
            f"{quote(source, safe='')}/{quote(proprietary_id, safe='')}"
        )
        answer = await self._send(
            "PATCH", url, data=document, headers={"Content-Type": "text/xml; charset=utf-8"}
        )
        return self._page(answer, url)

    def _page(self, answer: Answer, url: str) -> FeedPage:
        page = parse_feed(answer.body, precedence=self._config.record_precedence)
        for warning in page.warnings:
            log.warning(
                "elements.api_warning", field=warning.field, warning=warning.message, url=url
            )
        return page

    async def _send(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request, redirects followed (303 as a GET); an error answer raises, classified."""
        target = self.on_base(url)
        for _ in range(MAX_REDIRECTS + 1):
            status, body, response_headers = await self._exchange(method, target, data, headers)
            location = response_headers.get("Location")
            if status not in (301, 302, 303, 307, 308) or not location:
                break
            target = self.on_base(location, relative_to=target)
            if status == 303:
                method, data, headers = "GET", None, None
        else:
            raise PermanentError(f"more than {MAX_REDIRECTS} redirects from {url}", api="elements")
        if status >= 300 and status != 304:
            error = parse_error(body)
            raise classify_elements_error(
                status,
                error.code if error else None,
                error.message if error else f"HTTP {status} from {method} {target}",
                parse_retry_after(response_headers.get("Retry-After")),
            )
        return Answer(
            status,
            body,
            response_headers.get("Date"),
            Validators(response_headers.get("ETag"), response_headers.get("Last-Modified")),
        )

    async def _exchange(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str] | None
    ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        await self._polite_pause()
        started, status = time.monotonic(), "failed"
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers={**self._headers, **(headers or {})},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            ) as response:
                status = str(response.status)
                body = await self._read_capped(response)
                return response.status, body, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
            raise classify_exception("elements", exc) from exc
        finally:
            self._telemetry.request("elements", method, status, time.monotonic() - started)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._config.max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            raise ResponseTooLargeError(limit)
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise ResponseTooLargeError(limit)
        return bytes(body)

    async def _polite_pause(self) -> None:
        async with self._gap_lock:
            wait = self._last_request + self._config.request_gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_request = time.monotonic()


def _server_date(header: str | None) -> datetime:
    if header:
        try:
            return parsedate_to_datetime(header).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    # Without a usable Date the local clock is the only clock; the lookback absorbs skew.
    log.warning("elements.no_server_date")
    return datetime.now(UTC)
