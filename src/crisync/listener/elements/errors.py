"""Elements' error table: an error feed's `api:error code` decides the class, else the status."""

from __future__ import annotations

from crisync.errors import (
    CredentialError,
    CrisyncError,
    NotFoundError,
    PermanentError,
    RetriableError,
    classify_status,
)

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
