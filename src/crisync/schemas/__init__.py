"""JSON Schemas of the MQTT payloads, shipped with the package for subscribers (and the tests)."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any, Literal

SchemaName = Literal["outcome", "feed", "job", "command-result", "api"]


def load_schema(name: SchemaName) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one payload."""
    document: dict[str, Any] = json.loads(
        files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    )
    return document
