"""The one place where failures are classified as retriable or permanent.

Every client turns what went wrong into one of these exceptions, so the
dispatcher and the listeners decide what to do from the class alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

# Statuses worth asking again: conflicts and throttling pass, servers recover.
RETRIABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Unicat error codes worth asking again: server fault, unexpected error, search backend
# unreachable, external process failed. The others (400, 401, 403, 422, 501, validation,
# invite, Excel, selection) give the same answer next time.
UNICAT_RETRIABLE_CODES = frozenset({500, 1000, 1002, 1003})
UNICAT_SELECTION_ERROR = 1006


@dataclass(frozen=True)
class ErrorInfo:
    """What an outcome or a dead letter says about a failure."""

    error_class: str
    status: int | None
    message: str


class CrisyncError(Exception):
    """Base of every classified failure."""

    retriable = False

    def __init__(
        self, message: str, *, api: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.api = api
        self.status = status
        self.retry_after = retry_after

    def info(self) -> ErrorInfo:
        return ErrorInfo(type(self).__name__, self.status, f"{self.api}: {self.message}")


class RetriableError(CrisyncError):
    """Worth trying again: conflicts, throttling, server faults, timeouts, lost connections."""

    retriable = True


class PermanentError(CrisyncError):
    """Trying again gives the same answer: bad request, not found, gone, invalid data."""


class CredentialError(PermanentError):
    """The API refused our credentials or rights (401/403): stop talking to it, say why."""


class UnicatSelectionError(PermanentError):
    """Unicat 1006: the bulk selection or the sync cursor is invalid; a feed starts over at 0."""


class NotFoundError(PermanentError):
    """The resource does not exist (404) or its deletion was logged (410)."""


# Elements error feeds name their fault (`api:error code=...`); the code is finer than the
# HTTP status (the v5.5 document lists both), so it decides the class when it is known.
ELEMENTS_ERROR_CODES: dict[str, type[CrisyncError]] = {
    "argument fault": PermanentError,
    "concurrency conflict": RetriableError,
    "database timeout": RetriableError,
    "server fault": RetriableError,
    "invalid credentials": CredentialError,
    "unauthorised access": CredentialError,
    "unlicensed component": CredentialError,
    "resource not found": NotFoundError,
    "resource deleted": NotFoundError,
}


def classify_status(
    api: str, status: int, message: str, retry_after: float | None = None
) -> CrisyncError:
    """Map an HTTP error status from any API to its class."""
    if status in (401, 403):
        return CredentialError(message, api=api, status=status)
    if status in RETRIABLE_STATUSES:
        return RetriableError(message, api=api, status=status, retry_after=retry_after)
    return PermanentError(message, api=api, status=status)


def classify_unicat(context: str, code: int, message: str, http_status: int) -> CrisyncError:
    """Map Unicat's error envelope `{code, message, info}` to its class.

    HTTP errors carry their status as the code; application errors (1000-1006) come
    with HTTP 422. A 401 reaches this point only after the client authenticated again.
    """
    text = f"{context}: error {code}: {message}"
    if code == UNICAT_SELECTION_ERROR:
        return UnicatSelectionError(text, api="unicat", status=code)
    if code in (401, 403):
        return CredentialError(text, api="unicat", status=code)
    if code in UNICAT_RETRIABLE_CODES or http_status in RETRIABLE_STATUSES:
        return RetriableError(text, api="unicat", status=code)
    return PermanentError(text, api="unicat", status=code)


def classify_elements_error(
    status: int, code: str | None, message: str, retry_after: float | None = None
) -> CrisyncError:
    """An Elements error response: by its ATOM error code when known, else by its status."""
    error_class = ELEMENTS_ERROR_CODES.get(code or "")
    if error_class is None:
        detail = f"{code}: {message}" if code else message
        if status in (404, 410):
            return NotFoundError(detail, api="elements", status=status)
        return classify_status("elements", status, detail, retry_after)
    return error_class(
        f"{code}: {message}",
        api="elements",
        status=status,
        retry_after=retry_after if error_class.retriable else None,
    )


def classify_exception(api: str, exc: BaseException) -> CrisyncError:
    """Map a transport failure (timeout, refused connection, broken response) to its class."""
    if isinstance(exc, CrisyncError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return RetriableError("request timed out", api=api)
    if isinstance(exc, aiohttp.ClientError | ConnectionError):
        return RetriableError(f"connection failed: {type(exc).__name__}: {exc}", api=api)
    raise exc


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; dates are rare and ignored."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
