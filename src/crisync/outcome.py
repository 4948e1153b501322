"""Outcome messages: what happened to one source change, as MQTT subscribers receive it."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from crisync.errors import ErrorInfo
from crisync.state.inbox import InboxEvent
from crisync.state.store import utc_now

OUTCOME_SCHEMA = "crisync.outcome/1"
OutcomeAction = Literal["created", "updated", "unchanged", "deleted", "locked", "failed"]


def topic_level(value: str) -> str:
    """A value made safe as one MQTT topic level."""
    return value.replace("/", "_").replace("+", "_").replace("#", "_") or "_"


def outcome_topic(prefix: str, event: InboxEvent) -> str:
    levels = (topic_level(event.source), topic_level(event.kind), topic_level(event.key))
    return f"{prefix}/outcomes/" + "/".join(levels)


def outcome_payload(
    event: InboxEvent,
    *,
    action: OutcomeAction,
    pure_type: str | None,
    pure_uuid: str | None,
    attempts: int,
    error: ErrorInfo | None = None,
) -> str:
    document: dict[str, Any] = {
        "schema": OUTCOME_SCHEMA,
        "id": str(uuid.uuid4()),
        "source": event.source,
        "kind": event.kind,
        "key": event.key,
        "action": action,
        "pure": {"type": pure_type, "uuid": pure_uuid} if pure_uuid else None,
        "source_changed_at": event.changed_at,
        "observed_at": event.observed_at,
        "completed_at": utc_now(),
        "attempts": attempts,
    }
    if error is not None:
        document["error"] = {
            "class": error.error_class,
            "status": error.status,
            "message": error.message,
        }
    return json.dumps(document, separators=(",", ":"))
