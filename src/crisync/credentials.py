"""The one policy for refused credentials: an API that answered 401 or 403 gets no request
from the work that needs it for a while, and the reason is said once, at error level, with
what an operator should check. A feed also keeps it in its cursor (status, MQTT, restarts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog

from crisync.errors import REFUSED_CREDENTIALS, CredentialError

log = structlog.get_logger("crisync.credentials")


def refused(exc: CredentialError, *, pause: float, **where: str) -> datetime:
    """Log the refusal; returns the moment until which that API is left alone."""
    until = datetime.now(UTC) + timedelta(seconds=pause)
    log.error(
        "credentials.rejected",
        api=exc.api,
        status=exc.status,
        error=exc.message,
        pause_seconds=pause,
        until=until.isoformat(),
        detail=f"{exc.api} refused crisync's credentials or rights; check the API account, "
        "its secret, rights and licence; the work that needs it waits until then",
        **where,
    )
    return until


def refusal(exc: CredentialError) -> str:
    """The refusal as every place that shows an API's or a feed's state says it."""
    return f"{REFUSED_CREDENTIALS} (HTTP {exc.status}): {exc.message}"
