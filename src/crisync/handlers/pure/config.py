"""The [pure] section: where Pure is, whose organisation manages what crisync writes, limits."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from crisync.config.section import TargetSection, http_url
from crisync.handlers.pure.types import PURE_TYPES, RESERVED_PROPERTIES
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
    timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(10, ge=1, description="retriable failures before a dead letter")
    park_duration: float = Field(
        300.0, gt=0, description="seconds between tries after Pure refused the API key"
    )

    _check_url = field_validator("url")(http_url)

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
