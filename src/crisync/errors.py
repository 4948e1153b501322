"""The classes of failure, and the classification every API shares (HTTP statuses, transport).

Every client turns what went wrong into one of these exceptions, so the dispatcher and
the feed loops decide what to do from the class alone. An API's own error codes are
classified by the table beside its client (e.g. `crisync.listener.elements.errors`),
which answers with these classes and falls back on `classify_status`.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

# Statuses worth asking again: conflicts and throttling pass, servers recover.
RETRIABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


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


class UnreachableError(RetriableError):
    """No answer at all: the connection was refused, reset or could not be made.

    Never the fault of the object a request was about, unlike a timeout (a slow search) or
    a server error (a body the server chokes on): the outage circuit counts it as the API's
    from the first object on.
    """


class PermanentError(CrisyncError):
    """Trying again gives the same answer: bad request, not found, gone, invalid data."""


# How a refusal of crisync's credentials is said wherever an API's state is shown.
REFUSED_CREDENTIALS = "refused the credentials"
# How an API's refusal of what the configuration makes crisync send (a placeholder uuid
# every object names) is said there.
REFUSED_CONFIGURATION = "refused the configuration"


class CredentialError(PermanentError):
    """The API refused our credentials or rights (401/403): stop talking to it, say why."""


class MissingContentError(PermanentError):
    """The configuration names content the API does not hold (a placeholder uuid, say)."""


class MissingRightsError(PermanentError):
    """The API key works, but its access definition lacks what the configuration needs."""


class NotFoundError(PermanentError):
    """The resource does not exist (404) or its deletion was logged (410)."""


def classify_status(
    api: str, status: int, message: str, retry_after: float | None = None
) -> CrisyncError:
    """Map an HTTP error status from any API to its class."""
    if status in (401, 403):
        return CredentialError(message, api=api, status=status)
    if status in RETRIABLE_STATUSES:
        return RetriableError(message, api=api, status=status, retry_after=retry_after)
    return PermanentError(message, api=api, status=status)


def classify_exception(api: str, exc: BaseException) -> CrisyncError:
    """Map a transport failure (timeout, refused connection, broken response) to its class."""
    if isinstance(exc, CrisyncError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return RetriableError("request timed out", api=api)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UnreachableError(f"connection failed: {_cannot_connect(exc)}", api=api)
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        return UnreachableError(f"connection failed: {type(exc).__name__}: {exc}", api=api)
    if isinstance(exc, aiohttp.ClientError):
        return RetriableError(f"connection failed: {type(exc).__name__}: {exc}", api=api)
    raise exc


def _cannot_connect(exc: aiohttp.ClientConnectorError) -> str:
    """`cannot connect to host:port: reason`.

    aiohttp's own text names its TLS setting (`ssl:default`), and asyncio words a refused
    or unreachable connect "Connect call failed (address)", hiding the reason its errno
    holds; resolver and TLS errors word their reasons well.
    """
    cause = exc.os_error
    if isinstance(cause, socket.gaierror | ssl.SSLError) or not cause.errno:
        reason = cause.strerror or str(cause) or type(cause).__name__
    else:
        reason = os.strerror(cause.errno)
    return f"cannot connect to {exc.host}:{exc.port}: {reason}"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds, or an HTTP date (RFC 9110 10.2.3)
    counted from `now`; None when it is neither."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP date is always GMT; one without a zone is not one
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
