from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from crisync.errors import ErrorInfo
from crisync.outcome import OutcomeAction, outcome_payload
from crisync.schemas import load_schema
from crisync.state.inbox import InboxEvent

EVENT = InboxEvent(
    1,
    "elements:publications",
    "elements",
    "publication",
    "1042",
    "upsert",
    "2026-11-22T07:55:32.120000+00:00",
    "2026-11-22T07:55:33.004113+00:00",
    {},
    0,
)
OUTCOME = Draft202012Validator(load_schema("outcome"))


def problems(document: dict[str, Any]) -> list[str]:
    return [error.message for error in OUTCOME.iter_errors(document)]


@pytest.mark.parametrize("action", ["created", "updated", "unchanged", "deleted", "locked"])
def test_every_outcome_crisync_makes_matches_the_schema(action: OutcomeAction) -> None:
    payload = outcome_payload(
        EVENT, action=action, target_type="research-outputs", target_uuid="6a1d", attempts=1
    )
    assert problems(json.loads(payload)) == []


def test_a_failed_outcome_with_and_without_a_pure_object_matches_the_schema() -> None:
    error = ErrorInfo("PermanentError", 400, "pure: title is required")
    for uuid in ("6a1d", None):
        payload = outcome_payload(
            EVENT, action="failed", target_type=None, target_uuid=uuid, attempts=3, error=error
        )
        assert problems(json.loads(payload)) == []


def test_the_schema_refuses_what_a_subscriber_could_not_rely_on() -> None:
    valid = json.loads(
        outcome_payload(EVENT, action="created", target_type="persons", target_uuid="u", attempts=1)
    )
    assert problems({**valid, "action": "failed"}) == ["'error' is a required property"]
    assert problems({**valid, "observed_at": "yesterday"}) != []
    assert problems({**valid, "source": ""}) != []
    assert problems({k: v for k, v in valid.items() if k != "id"}) == [
        "'id' is a required property"
    ]
    assert problems({**valid, "extra": 1}) != []


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    for name in ("outcome", "feed", "job", "command-result"):
        schema = load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["properties"]["schema"]["const"] == schema["$id"]
