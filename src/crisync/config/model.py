"""The configuration's shape and rules: one pydantic model per TOML section."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from crisync.config.mapping import MappingsConfig

# Every object category of the Elements API, by its feed (plural) name.
ElementsCategory = Literal[
    "activities",
    "equipment",
    "grants",
    "org-structures",
    "projects",
    "publications",
    "teaching-activities",
    "users",
]
# Feed name → the category its api:objects carry (and that /{cat}/types etc. are named by).
CATEGORY_OF_FEED: dict[ElementsCategory, str] = {
    "activities": "activity",
    "equipment": "equipment",
    "grants": "grant",
    "org-structures": "org-structure",
    "projects": "project",
    "publications": "publication",
    "teaching-activities": "teaching-activity",
    "users": "user",
}
DEFAULT_CATEGORIES: tuple[ElementsCategory, ...] = ("users", "publications")
# The API refuses larger pages: 25 objects with full detail, 1000 references.
MAX_PER_PAGE = {"full": 25, "ref": 1000}


class Section(BaseModel):
    """Unknown keys are errors: a typo must not silently switch a setting off."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class StateConfig(Section):
    path: Path = Path("/var/lib/crisync/state.db")


class WritebackConfig(Section):
    """After a Pure create, set `field` of the object's record from `source` to the Pure uuid."""

    source: str = Field(min_length=1, description="data source whose record is patched")
    field: str = Field(min_length=1, description="a text field of that record")


class ElementsConfig(Section):
    url: str
    username: str
    password: SecretStr = Field(exclude=True)
    categories: list[ElementsCategory] = Field(default=list(DEFAULT_CATEGORIES), min_length=1)
    poll_interval: float = Field(60.0, gt=0)
    lookback: float = Field(
        300.0, ge=0, le=21600, description="seconds re-read before the high-water mark"
    )
    detail: Literal["full", "ref"] = Field(
        "full", description="full: objects in the feed; ref: references, each object fetched"
    )
    per_page: int = Field(25, ge=1, description="at most 25 with detail full, 1000 with ref")
    deletions: bool = Field(True, description="read /deleted/{category} into delete events")
    request_gap: float = Field(0.25, ge=0, description="minimum seconds between two requests")
    timeout: float = Field(60.0, gt=0)
    max_response_bytes: int = Field(
        32 * 1024 * 1024, ge=64 * 1024, description="a larger response fails that request"
    )
    park_duration: float = Field(
        900.0, gt=0, description="seconds a feed rests after Elements refused access (401/403)"
    )
    writeback: dict[ElementsCategory, WritebackConfig] = Field(default_factory=dict)

    _check_url = field_validator("url")(_http_url)

    @field_validator("categories")
    @classmethod
    def _distinct(cls, value: list[ElementsCategory]) -> list[ElementsCategory]:
        if len(set(value)) != len(value):
            raise ValueError("a category is listed twice")
        return value

    @field_validator("per_page")
    @classmethod
    def _api_limit(cls, value: int, info: ValidationInfo) -> int:
        detail = info.data.get("detail", "full")  # validated before per_page
        limit = MAX_PER_PAGE[detail]
        if value > limit:
            raise ValueError(f"the API allows at most {limit} with detail = {detail!r}")
        return value

    @model_validator(mode="after")
    def _writeback_categories_are_read(self) -> ElementsConfig:
        unread = sorted(set(self.writeback) - set(self.categories))
        if unread:
            raise ValueError(f"writeback for categories that are not read: {', '.join(unread)}")
        return self


# Unicat project data types with a `/{type}/get` endpoint; a sync item of another type is ignored.
UnicatDataType = Literal[
    "records", "assets", "definitions", "classes", "fields", "layouts", "queries"
]


class UnicatMapping(Section):
    """Which Pure content a Unicat record of one definition becomes."""

    definition: str = Field(description="definition name (or gid) this rule applies to; * for any")
    pure_type: str = Field("persons", description="the Pure API path segment, e.g. persons")
    id_source: str = Field(
        "synchronisedUnifiedPerson", description="idSource of the PrimaryId identifier"
    )
    fields: dict[str, str] = Field(
        default_factory=dict, description="Unicat field name → Pure property path (dotted)"
    )
    static: dict[str, Any] = Field(
        default_factory=dict, description="Pure properties written as given, fields on top"
    )

    def applies_to(self, definition: str | None, definition_gid: str | None) -> bool:
        return self.definition in ("*", definition, definition_gid)


class UnicatConfig(Section):
    url: str = "https://unicat.app"
    project: str = Field(description="the project gid")
    api_key: SecretStr = Field(exclude=True)
    data_types: list[UnicatDataType] = Field(default=["records"], min_length=1)
    language: str = Field("en", description="the project language whose field values are read")
    mappings: list[UnicatMapping] = Field(min_length=1)
    poll_interval: float = Field(30.0, gt=0)
    fetch_concurrency: int = Field(4, ge=1, le=32, description="item fetches in flight at once")
    timeout: float = Field(60.0, gt=0)
    job_stall_after: float = Field(
        900.0, gt=0, description="seconds without progress before a job counts as stalled"
    )

    _check_url = field_validator("url")(_http_url)

    @field_validator("project")
    @classmethod
    def _project_gid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be the project gid, a UUID") from None


class PureConfig(Section):
    url: str
    api_key: SecretStr = Field(exclude=True)
    managing_organization: str = Field(
        description="uuid of the Pure organisation that manages replicated content"
    )
    concurrency: int = Field(4, ge=1, le=64, description="requests to Pure in flight at once")
    rate_limit: float | None = Field(
        None, gt=0, description="requests per second to Pure at most; none: only concurrency"
    )
    timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(10, ge=1, description="retriable failures before a dead letter")

    _check_url = field_validator("url")(_http_url)


class MqttConfig(Section):
    url: str = Field(
        "mqtt://localhost:1883", description="mqtt://host[:port] or mqtts://host[:port] (TLS)"
    )
    topic_prefix: str = "crisync"
    client_id: str = Field(
        "crisync", min_length=1, description="stable: the broker keeps the session under it"
    )
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: str | None = None
    password: SecretStr | None = Field(None, exclude=True)
    ca_file: FilePath | None = Field(
        None, description="mqtts: CA certificates to trust (default: the system's)"
    )
    cert_file: FilePath | None = Field(None, description="mqtts: client certificate (PEM)")
    key_file: FilePath | None = Field(
        None, description="mqtts: the client certificate's key, unless cert_file holds it"
    )
    keepalive: int = Field(60, ge=5, le=65535)
    publish_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for the broker's PUBACK before sending again"
    )
    session_expiry: int = Field(
        86400, ge=0, description="MQTT 5: seconds the broker keeps the session after a disconnect"
    )

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be an mqtt://host[:port] or mqtts://host[:port] URL")
        return value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        # CRISYNC_MQTT__PROTOCOL=5 arrives as the number 5.
        return str(value) if isinstance(value, int) else value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "#+")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError("must be a non-empty topic level without '#', '+' or edge slashes")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if not self.tls and any((self.ca_file, self.cert_file, self.key_file)):
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// url")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        if self.password is not None and self.username is None:
            raise ValueError("a password (CRISYNC_MQTT_PASSWORD) needs username")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class MetricsConfig(Section):
    """The HTTP endpoint with /healthz and /metrics; the section switches it on."""

    host: str = Field("127.0.0.1", description="address to listen on; 127.0.0.1 keeps it local")
    port: int = Field(9660, ge=1, le=65535)


CommandName = Literal["retry", "resync"]


class CommandsConfig(Section):
    """Operator commands over MQTT; the section switches them on."""

    allow: list[CommandName] = Field(default=["retry", "resync"], min_length=1)


class DaemonConfig(Section):
    shutdown_timeout: float = Field(
        20.0, gt=0, description="seconds SIGTERM waits for in-flight work and the outbox"
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Config(Section):
    state: StateConfig = StateConfig()
    daemon: DaemonConfig = DaemonConfig()
    elements: ElementsConfig | None = None
    unicat: UnicatConfig | None = None
    pure: PureConfig | None = None
    mqtt: MqttConfig | None = None
    # Always there: without a [mappings] section the built-in mappings apply.
    mappings: MappingsConfig = Field(default_factory=MappingsConfig)
    metrics: MetricsConfig | None = None
    commands: CommandsConfig | None = None

    @model_validator(mode="after")
    def _feeds_need_pure(self) -> Config:
        for name, feed in (("elements", self.elements), ("unicat", self.unicat)):
            if feed is not None and self.pure is None:
                raise ValueError(
                    f"[{name}] is configured but [pure] is not: changes would have nowhere to go"
                )
        return self

    @model_validator(mode="after")
    def _commands_need_mqtt(self) -> Config:
        if self.commands is not None and self.mqtt is None:
            raise ValueError(
                "[commands] is configured but [mqtt] is not: commands arrive over MQTT"
            )
        return self
