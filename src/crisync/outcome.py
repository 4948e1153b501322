"""Outcome messages: what happened to one source change, as MQTT subscribers receive it."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from crisync.errors import ErrorInfo
from crisync.state.inbox import InboxEvent
from crisync.state.store import utc_now

OUTCOME_SCHEMA = "crisync.outcome/1"
# adopted: content Pure held already, taken over; linked: found and referred to, never
# written; skipped: nothing found and the mapping does not create.
OutcomeAction = Literal[
    "created",
    "adopted",
    "linked",
    "updated",
    "unchanged",
    "locked",
    "deleted",
    "skipped",
    "failed",
]


def topic_level(value: str) -> str:
    """A value made safe as one MQTT topic level."""
    return value.replace("/", "_").replace("+", "_").replace("#", "_") or "_"


def outcome_topic(prefix: str, event: InboxEvent) -> str:
    return object_outcome_topic(prefix, event.source, event.kind, event.key)


def object_outcome_topic(prefix: str, source: str, kind: str, key: str) -> str:
    levels = (topic_level(source), topic_level(kind), topic_level(key))
    return f"{prefix}/outcomes/" + "/".join(levels)


def outcome_payload(
    event: InboxEvent,
    *,
    action: OutcomeAction,
    target_type: str | None,
    target_uuid: str | None,
    attempts: int,
    error: ErrorInfo | None = None,
    note: str | None = None,
) -> str:
    return object_outcome_payload(
        event.source,
        event.kind,
        event.key,
        source_changed_at=event.changed_at,
        observed_at=event.observed_at,
        action=action,
        target_type=target_type,
        target_uuid=target_uuid,
        attempts=attempts,
        error=error,
        note=note,
    )


def object_outcome_payload(
    source: str,
    kind: str,
    key: str,
    *,
    source_changed_at: str,
    observed_at: str,
    action: OutcomeAction,
    target_type: str | None,
    target_uuid: str | None,
    attempts: int,
    error: ErrorInfo | None = None,
    note: str | None = None,
) -> str:
    """An outcome about any source object, whether or not it passed through the inbox."""
    document: dict[str, Any] = {
        "schema": OUTCOME_SCHEMA,
        "id": str(uuid.uuid4()),
        "source": source,
        "kind": kind,
        "key": key,
        "action": action,
        # `pure` names the target's content: the key subscribers know from schema 1.
        "pure": {"type": target_type, "uuid": target_uuid} if target_uuid else None,
        "source_changed_at": source_changed_at,
        "observed_at": observed_at,
        "completed_at": utc_now(),
        "attempts": attempts,
    }
    if note is not None:
        document["note"] = note
    if error is not None:
        document["error"] = {
            "class": error.error_class,
            "status": error.status,
            "message": error.message,
        }
    return json.dumps(document, separators=(",", ":"))
