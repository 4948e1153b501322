"""The [elements] section: where the Elements API is and what crisync reads from it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from crisync.config.section import Section, SourceSection, http_url

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
# Category → its resource (the plural the listener reads it from).
FEED_OF_CATEGORY: dict[str, ElementsCategory] = {
    category: feed for feed, category in CATEGORY_OF_FEED.items()
}
DEFAULT_CATEGORIES: tuple[ElementsCategory, ...] = ("users", "publications")
# The API refuses larger pages: 25 objects with full detail, 1000 references.
MAX_PER_PAGE = {"full": 25, "ref": 1000}


class WritebackConfig(Section):
    """After a target created the object's content, set `field` of the object's record from
    `source` to the content's uuid."""

    source: str = Field(min_length=1, description="data source whose record is patched")
    field: str = Field(min_length=1, description="a text field of that record")


class ElementsConfig(SourceSection):
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
    writeback: dict[ElementsCategory, WritebackConfig] = Field(default_factory=dict)
    relationships: list[ElementsCategory] | None = Field(
        None,
        description="categories whose objects' relationships are read into their payload; "
        "default: publications, when read",
    )
    suggestions: bool = Field(
        False, description="read pending relationship suggestions too (claimed = false)"
    )
    record_precedence: list[str] = Field(
        default_factory=list,
        description="record sources whose fields win, in order (e.g. manual, scopus, wos); "
        "a field none of them has comes from the others in Elements' order",
    )

    _check_url = field_validator("url")(http_url)

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

    @model_validator(mode="after")
    def _relationship_categories_are_read(self) -> ElementsConfig:
        unread = sorted(set(self.relationships or ()) - set(self.categories))
        if unread:
            raise ValueError(f"relationships of categories that are not read: {', '.join(unread)}")
        return self

    @property
    def relationship_categories(self) -> frozenset[ElementsCategory]:
        """The categories whose objects carry their relationships in the payload."""
        if self.relationships is not None:
            return frozenset(self.relationships)
        return frozenset(self.categories) & {"publications"}

    def kinds(self) -> frozenset[str]:
        return frozenset(CATEGORY_OF_FEED[feed] for feed in self.categories)
