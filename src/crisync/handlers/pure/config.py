"""The [pure] section: where Pure is, whose organisation manages what crisync writes, limits."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from crisync.config.section import TargetSection, http_url
from crisync.handlers.pure.types import PURE_TYPES, RESERVED_PROPERTIES
from crisync.handlers.throttle import BackfillWindow
from crisync.mapping.rules import ObjectMapping


class PureConfig(TargetSection):
    url: str
    api_key: SecretStr = Field(exclude=True)
    managing_organization: str = Field(
        description="uuid of the Pure organisation that manages replicated content"
    )
    concurrency: int = Field(4, ge=1, le=64, description="requests to Pure in flight at once")
    rate_limit: float | None = Field(
        None, gt=0, description="requests per second to Pure at most; none: only concurrency"
    )
    hourly_quota: int | None = Field(
        None,
        ge=1,
        description="Pure requests in any rolling hour at most (Pure's site-wide quota, "
        "less what other clients of the site need); none: no quota",
    )
    backfill_window: str | None = Field(
        None,
        description='local hours when backfill work may run, e.g. "22:00-06:00"; none: any time',
    )
    changes_share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="share of rate_limit, hourly_quota and handlers that backfill leaves to "
        "ordinary changes (only where a rate_limit or an hourly_quota is set)",
    )
    retry_after_cap: float = Field(
        300.0, gt=0, description="seconds at most to wait when Pure answers 429/503 Retry-After"
    )
    timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(10, ge=1, description="retriable failures before a dead letter")
    park_duration: float = Field(
        300.0, gt=0, description="seconds between tries after Pure refused the API key"
    )

    _check_url = field_validator("url")(http_url)

    @field_validator("backfill_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            BackfillWindow.parse(value)  # ValueError says what is wrong with it
        return value

    @classmethod
    def mapping_problems(cls, rules: ObjectMapping) -> list[str]:
        if rules.type not in PURE_TYPES:
            return [f"unknown Pure type {rules.type!r}; known: {sorted(PURE_TYPES)}"]
        reserved = [
            f"{path!r}: crisync writes {path.split('.')[0]} itself"
            for path in rules.properties
            if path.split(".")[0] in RESERVED_PROPERTIES
        ]
        unknown = [
            f"{path!r}: find names unknown Pure type {rule.find!r}"
            for path, rule in rules.properties.items()
            if rule.find is not None and rule.find not in PURE_TYPES
        ]
        return reserved + unknown
