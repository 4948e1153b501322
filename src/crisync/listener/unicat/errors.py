"""Unicat's error table: the envelope's `code` decides the class (HTTP statuses and 1000-1006)."""

from __future__ import annotations

from crisync.errors import (
    RETRIABLE_STATUSES,
    CredentialError,
    CrisyncError,
    PermanentError,
    RetriableError,
)

# Unicat error codes worth asking again: server fault, unexpected error, search backend
# unreachable, external process failed. The others (400, 401, 403, 422, 501, validation,
# invite, Excel, selection) give the same answer next time.
UNICAT_RETRIABLE_CODES = frozenset({500, 1000, 1002, 1003})
UNICAT_SELECTION_ERROR = 1006


class UnicatSelectionError(PermanentError):
    """Unicat 1006: the bulk selection or the sync cursor is invalid; a feed starts over at 0."""


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
