"""The configuration's shape and rules: one pydantic model per TOML section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

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


class PureConfig(Section):
    url: str
    api_key: SecretStr = Field(exclude=True)
    managing_organization: str = Field(
        description="uuid of the Pure organisation that manages replicated content"
    )
    concurrency: int = Field(4, ge=1, le=64)
    timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(10, ge=1, description="retriable failures before a dead letter")

    _check_url = field_validator("url")(_http_url)


class MqttConfig(Section):
    url: str = "mqtt://localhost:1883"
    topic_prefix: str = "crisync"
    client_id: str = "crisync"
    username: str | None = None
    password: SecretStr | None = Field(None, exclude=True)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError("must be an mqtt://host[:port] URL")
        return value

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

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883


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
    pure: PureConfig | None = None
    mqtt: MqttConfig | None = None

    @model_validator(mode="after")
    def _feeds_need_pure(self) -> Config:
        if self.elements is not None and self.pure is None:
            raise ValueError(
                "[elements] is configured but [pure] is not: changes would have nowhere to go"
            )
        return self
