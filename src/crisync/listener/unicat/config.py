"""The [unicat] section: which Unicat project crisync follows and what it reads from it."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from crisync.config.section import SourceSection, http_url

# Unicat project data types with a `/{type}/get` endpoint; a sync item of another type is ignored.
UnicatDataType = Literal[
    "records", "assets", "definitions", "classes", "fields", "layouts", "queries"
]
# A data type's kind in the inbox and in [mappings.unicat.<kind>]: the singular the API
# names its gid parameter with.
KIND_OF_DATA_TYPE: dict[str, str] = {
    "records": "record",
    "assets": "asset",
    "definitions": "definition",
    "classes": "class",
    "fields": "field",
    "layouts": "layout",
    "queries": "query",
}
RECORD = KIND_OF_DATA_TYPE["records"]


class UnicatConfig(SourceSection):
    url: str = "https://unicat.app"
    project: str = Field(description="the project gid")
    api_key: SecretStr = Field(exclude=True)
    data_types: list[UnicatDataType] = Field(default=["records"], min_length=1)
    definitions: list[str] = Field(
        default_factory=list,
        description="definitions (names or gids) whose records are read, each a kind of its "
        "own ([mappings.unicat.<definition>]); empty: every record, kind record",
    )
    language: str = Field("en", description="the project language whose field values are read")
    poll_interval: float = Field(30.0, gt=0)
    fetch_concurrency: int = Field(4, ge=1, le=32, description="item fetches in flight at once")
    timeout: float = Field(60.0, gt=0)
    job_stall_after: float = Field(
        900.0, gt=0, description="seconds without progress before a job counts as stalled"
    )
    job_retain_for: float = Field(
        86400.0,
        gt=0,
        description="seconds a finished job stays on its retained topic and in the jobs table",
    )
    park_duration: float = Field(
        300.0, gt=0, description="seconds the feed rests after Unicat refused the API key"
    )

    _check_url = field_validator("url")(http_url)

    @model_validator(mode="before")
    @classmethod
    def _no_old_mapping_rules(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mappings" in data:
            raise ValueError(
                "[[unicat.mappings]] is gone: each definition read is a kind of its own, "
                "mapped like Elements objects in [mappings.unicat.<definition>]; replace "
                "those rules with:\n" + new_form_of(data["mappings"])
            )
        return data

    @field_validator("project")
    @classmethod
    def _project_gid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be the project gid, a UUID") from None

    @field_validator("definitions")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a definition is listed twice")
        return value

    def kinds(self) -> frozenset[str]:
        kinds = {KIND_OF_DATA_TYPE[data_type] for data_type in self.data_types}
        if "records" in self.data_types and self.definitions:
            kinds = (kinds - {RECORD}) | set(self.definitions)
        return frozenset(kinds)

    def record_kind(self, definition: str | None, definition_gid: str | None) -> str | None:
        """The kind of a record of this definition; None when its records are not read."""
        if not self.definitions:
            return RECORD
        return next((d for d in self.definitions if d in (definition, definition_gid)), None)


def new_form_of(old_rules: Any) -> str:
    """The TOML that replaces old [[unicat.mappings]] rules, for the message that refuses them:
    each rule's definition becomes a kind of its own, mapped like any source object."""
    rules = [r for r in old_rules if isinstance(r, dict)] if isinstance(old_rules, list) else []
    named = [str(r.get("definition")) for r in rules if r.get("definition") not in (None, "*")]
    lines = ["[unicat]", f"definitions = {json.dumps(named)}"] if named else []
    for rule in rules:
        definition = rule.get("definition")
        kind = RECORD if definition in (None, "*") else str(definition)
        lines += ["", f"[mappings.unicat.{_key(kind)}]"]
        lines.append(f"pure_type = {json.dumps(rule.get('pure_type', 'persons'))}")
        if rule.get("id_source"):
            lines.append(f"id_source = {json.dumps(rule['id_source'])}")
        lines += ["", f"[mappings.unicat.{_key(kind)}.properties]"]
        static, fields = rule.get("static"), rule.get("fields")
        for path, value in _flattened(static if isinstance(static, dict) else {}):
            lines.append(f"{_key(path)} = {{ value = {json.dumps(value)} }}")
        for field_name, path in (fields if isinstance(fields, dict) else {}).items():
            lines.append(f'{_key(str(path))} = {{ from = "fields.{field_name}" }}')
    return "\n".join(lines)


def _flattened(document: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted paths to the scalars and lists of a nested document."""
    pairs: list[tuple[str, Any]] = []
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs += _flattened(value, f"{path}.")
        else:
            pairs.append((path, value))
    return pairs


def _key(key: str) -> str:
    """A TOML key: bare where TOML allows, else quoted (a quoted key is a JSON string)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
